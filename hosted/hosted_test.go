package hosted_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"testing"
	"time"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/hosted"
	"github.com/kluis-dev/kluis/postgres/pgtest"
	"github.com/kluis-dev/kluis/vault"
)

// macs is a MACer with a fixed key: the store's rules, not the key
// store's, are under test here (api's tests run it on vault.SystemKeys).
type macs struct{}

func (macs) MAC(name string, parts ...[]byte) ([]byte, error) {
	m := hmac.New(sha256.New, []byte("hosted-test-key/"+name))
	for _, p := range parts {
		m.Write(p)
		m.Write([]byte{0})
	}
	return m.Sum(nil), nil
}

func TestAPageOpensOnceEachFormIsTakenOnceAndAnOAuthDepartureIsRemembered(t *testing.T) {
	ctx := context.Background()
	db, _ := pgtest.Open(t)
	sub, err := vault.EnsureSubject(ctx, db.Pool, "user-hosted-store")
	if err != nil {
		t.Fatal(err)
	}
	s := hosted.NewStore(db, macs{}, nil)
	obj := kluis.NewID(kluis.PrefixLinkSession)
	tok, exp, err := s.Issue(ctx, hosted.PurposeLink, obj, sub, time.Minute)
	if err != nil || time.Until(exp) > time.Minute {
		t.Fatalf("issue: %v, expires %v", err, exp)
	}
	refused := func(what string, err error) {
		t.Helper()
		if kluis.ErrorCode(err) != hosted.CodeRefused {
			t.Errorf("%s: %v, want %s", what, err, hosted.CodeRefused)
		}
	}
	_, _, err = s.Open(ctx, hosted.PurposeVerify, obj, tok, hosted.State{})
	refused("opened for another purpose", err)
	p, form, err := s.Open(ctx, hosted.PurposeLink, obj, tok, hosted.State{Origin: "https://app.example.com", Mode: "popup"})
	if err != nil || p.SubjectID != sub || p.State.Mode != "popup" {
		t.Fatalf("open: %+v %v", p, err)
	}
	_, _, err = s.Open(ctx, hosted.PurposeLink, obj, tok, hosted.State{})
	refused("opened twice", err)

	if away, err := s.SentAway(ctx, hosted.PurposeLink, obj); err != nil || away {
		t.Fatalf("a page that sent nobody away: %v %v", away, err)
	}
	p, next, err := s.Take(ctx, hosted.PurposeLink, obj, form)
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = s.Take(ctx, hosted.PurposeLink, obj, form)
	refused("a form taken twice", err)
	p.Step, p.State.SentTo = "authorize", "stitch"
	if err := s.Save(ctx, p, next); err != nil {
		t.Fatal(err)
	}
	refused("saved with a spent form token", s.Save(ctx, p, form))
	if away, err := s.SentAway(ctx, hosted.PurposeLink, obj); err != nil || !away {
		t.Fatalf("a page that sent the browser away: %v %v", away, err)
	}
	if away, _ := s.SentAway(ctx, hosted.PurposeLink, kluis.NewID(kluis.PrefixLinkSession)); away {
		t.Error("another session counts as sent away")
	}

	// Past its deadline the page's form opens nothing; it is still known
	// to have sent the browser away.
	if _, err := db.Pool.Exec(ctx, `UPDATE hosted_pages SET expires_at = now() - interval '1 second' WHERE object_id = $1`, obj); err != nil {
		t.Fatal(err)
	}
	_, _, err = s.Take(ctx, hosted.PurposeLink, obj, next)
	refused("an expired page's form", err)
	if away, _ := s.SentAway(ctx, hosted.PurposeLink, obj); !away {
		t.Error("an expired page forgot it sent the browser away")
	}
}
