package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/postgres"
	"github.com/kluis-dev/kluis/postgres/pgtest"
)

// A connection that goes away is the database being unavailable (503 with
// Retry-After), never an internal error (500), however it goes: the shapes
// pgx hands back when the server or a proxy closes the connection.
func TestTranslateALostConnectionIsUnavailable(t *testing.T) {
	for _, err := range []error{
		io.ErrUnexpectedEOF, // pgproto3: the peer's FIN in the middle of an answer
		fmt.Errorf("failed to receive message: %w", io.ErrUnexpectedEOF),
		io.EOF,
		net.ErrClosed,
		&net.OpError{Op: "read", Net: "tcp", Err: errors.New("connection reset by peer")},
		context.DeadlineExceeded,
	} {
		got := postgres.Translate(err)
		if kluis.ErrorCode(got) != kluis.EUnavailable || !errors.Is(got, kluis.ErrUnavailable) {
			t.Errorf("Translate(%v) = %v (%s), want unavailable", err, got, kluis.ErrorCode(got))
		}
	}
	if got := postgres.Translate(errors.New("something else")); kluis.ErrorCode(got) != kluis.EInternal {
		t.Errorf("an unknown error = %s, want internal", kluis.ErrorCode(got))
	}
}

// An open connection whose peer closes it (a FIN, as a proxy gives the
// connections it already holds when it starts tearing them down): the next
// query's error translates to unavailable.
func TestTranslateAConnectionClosedByItsPeerIsUnavailable(t *testing.T) {
	ctx := context.Background()
	u, err := url.Parse(pgtest.New(t))
	if err != nil {
		t.Fatal(err)
	}
	p := startClosingProxy(t, u.Host)
	u.Host = p.addr
	conn, err := pgx.Connect(ctx, u.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	var one int
	if err := conn.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil {
		t.Fatalf("before the close: %v", err)
	}
	p.closeAll()
	err = conn.QueryRow(ctx, "SELECT 1").Scan(&one)
	if err == nil {
		t.Fatal("a query on a closed connection succeeded")
	}
	if got := postgres.Translate(err); kluis.ErrorCode(got) != kluis.EUnavailable {
		t.Fatalf("Translate(%v) = %s, want unavailable", err, kluis.ErrorCode(got))
	}
}

// closingProxy forwards TCP to upstream until closeAll, which closes every
// client connection gracefully (a FIN, no RST).
type closingProxy struct {
	addr  string
	mu    sync.Mutex
	conns []net.Conn
}

func startClosingProxy(t *testing.T, upstream string) *closingProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &closingProxy{addr: ln.Addr().String()}
	t.Cleanup(func() { _ = ln.Close(); p.closeAll() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", upstream)
			if err != nil {
				_ = c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, up)
			p.mu.Unlock()
			go func() { _, _ = io.Copy(up, c); _ = up.Close() }()
			go func() { _, _ = io.Copy(c, up); _ = c.Close() }()
		}
	}()
	return p
}

func (p *closingProxy) closeAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		_ = c.Close()
	}
	p.conns = nil
}
