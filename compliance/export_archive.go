package compliance

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"filippo.io/age"
	"github.com/jackc/pgx/v5"

	"github.com/kluis-dev/kluis"
	"github.com/kluis-dev/kluis/audit"
	"github.com/kluis-dev/kluis/postgres"
	"github.com/kluis-dev/kluis/vault"
)

// ExportFormat names the layout of a complete subject export archive: a tar
// of manifest.json, records.json and sealed.json, encrypted with age.
const ExportFormat = "kluis-subject-export/1"

// SealedOpener lists and opens a subject's sealed records for the complete
// export, in the export's transaction; *vault.Store is one.
type SealedOpener interface {
	SubjectCredentials(ctx context.Context, q postgres.Querier, subjectID string) ([]vault.SubjectCredential, error)
	OpenIn(ctx context.Context, q postgres.Querier, ref string) (vault.Credential, error)
}

// SetSealedOpener gives the service what the complete export opens sealed
// records with. Without one, ExportArchive is unavailable.
func (s *Service) SetSealedOpener(o SealedOpener) { s.sealed = o }

// SealedRecord is one opened record in an export's sealed.json: the
// person's own data (an account number with its routing or branch code, an
// identity number), opened because GDPR Art. 15 and POPIA s23 give it back
// to them in an intelligible form.
type SealedRecord struct {
	Ref       string          `json:"ref"`
	Kind      string          `json:"kind"`
	Owner     vault.Owner     `json:"owner"`
	CreatedAt time.Time       `json:"created_at"`
	Fields    json.RawMessage `json:"fields"`
}

// ExportManifest says what an export archive holds, and what it leaves out
// and why.
type ExportManifest struct {
	Format           string           `json:"format"`
	GeneratedAt      time.Time        `json:"generated_at"`
	SubjectPseudonym string           `json:"subject_pseudonym"`
	Files            []ManifestFile   `json:"files"`
	Included         map[string]int   `json:"included"`
	Withheld         []WithheldRecord `json:"withheld"`
}

// ManifestFile is one file of the archive with its SHA-256, so that the
// person can check that nothing was changed after the export.
type ManifestFile struct {
	Name   string `json:"name"`
	Bytes  int    `json:"bytes"`
	SHA256 string `json:"sha256"`
}

// WithheldRecord is one thing the export leaves out, with the reason.
type WithheldRecord struct {
	What   string `json:"what"`
	Ref    string `json:"ref,omitempty"`
	Reason string `json:"reason"`
}

// ExportArchive is a complete export, encrypted to the recipient. Digest is
// the SHA-256 of Archive (hex), as the audit entry records it.
type ExportArchive struct {
	Archive []byte
	Digest  string
}

// The reasons a manifest gives for what it withholds.
const (
	reasonRevoked    = "destroyed when consent was withdrawn at the bank: only a tombstone is left, nothing to open"
	reasonCiphertext = "ciphertext, keyed hashes or MACs: not intelligible; where they seal the person's data, sealed.json holds it opened"
	reasonKeys       = "the subject's encryption keys: kluis's means of protecting the data, not personal data"
)

// ParseRecipient checks that recipient is an age X25519 recipient
// ("age1…"). A bad one is EInvalid naming the field.
func ParseRecipient(recipient string) (age.Recipient, error) {
	if len(recipient) > 200 || !strings.HasPrefix(recipient, "age1") {
		return nil, kluis.Errorf(kluis.EInvalid, "recipient must be an age X25519 recipient (age1…)")
	}
	r, err := age.ParseX25519Recipient(recipient)
	if err != nil {
		return nil, kluis.Errorf(kluis.EInvalid, "recipient must be an age X25519 recipient (age1…)")
	}
	return r, nil
}

// ExportArchive gathers everything kluis holds on the subject whose external
// id is subject, sealed records opened, into an archive encrypted to
// recipient (an age X25519 public key the requesting staff member holds the
// private half of). The audit entry, with the archive's digest, commits
// before the archive is returned; if it cannot, nothing is returned. The
// plaintext never leaves memory and is overwritten once encrypted.
func (s *Service) ExportArchive(ctx context.Context, by Staff, subject, recipient string) (ExportArchive, error) {
	rcpt, err := ParseRecipient(recipient)
	if err != nil {
		return ExportArchive{}, err
	}
	if s.sealed == nil {
		return ExportArchive{}, kluis.Errorf(kluis.EUnavailable, "the complete export is not available")
	}
	var sealed []SealedRecord
	var withheld []WithheldRecord
	defer func() { zeroSealed(sealed) }()
	out, err := s.gatherExport(ctx, subject, func(ctx context.Context, tx pgx.Tx, sid string) error {
		var err error
		sealed, withheld, err = s.openSealed(ctx, tx, sid)
		return err
	})
	if err != nil {
		return ExportArchive{}, err
	}
	plain, manifest, err := buildArchive(out, sealed, withheld)
	defer clear(plain)
	if err != nil {
		return ExportArchive{}, err
	}
	archive, err := encryptTo(rcpt, plain)
	if err != nil {
		return ExportArchive{}, err
	}
	sum := sha256.Sum256(archive)
	res := ExportArchive{Archive: archive, Digest: hex.EncodeToString(sum[:])}
	err = s.auditor.Record(ctx, audit.Entry{
		ActorKind: audit.ActorStaff, Actor: by.ID, Action: "subject.exported", Outcome: audit.OutcomeSuccess,
		Subject: subject, RequestID: by.RequestID, Details: map[string]any{
			"format": ExportFormat, "encryption": "age", "recipient": recipient,
			"sha256": res.Digest, "included": manifest.Included, "withheld": len(manifest.Withheld),
		},
	})
	if err != nil {
		return ExportArchive{}, err
	}
	return res, nil
}

// openSealed opens the subject's live account and identity numbers and
// lists what it withholds: provider tokens (a credential, not their data)
// and tombstones (nothing left). A record that does not open is an error:
// an export that silently lacked data would answer the person wrongly.
func (s *Service) openSealed(ctx context.Context, tx pgx.Tx, sid string) ([]SealedRecord, []WithheldRecord, error) {
	creds, err := s.sealed.SubjectCredentials(ctx, tx, sid)
	if err != nil {
		return nil, nil, err
	}
	var sealed []SealedRecord
	var withheld []WithheldRecord
	for _, ci := range creds {
		switch {
		case ci.Revoked:
			withheld = append(withheld, WithheldRecord{What: ci.Kind, Ref: ci.Ref, Reason: reasonRevoked})
		case ci.Withheld != "":
			// A credential its feature registered as not the person's
			// data (a provider token): listed, never opened.
			withheld = append(withheld, WithheldRecord{What: ci.Kind, Ref: ci.Ref, Reason: ci.Withheld})
		default:
			c, err := s.sealed.OpenIn(ctx, tx, ci.Ref)
			if err != nil {
				zeroSealed(sealed)
				return nil, nil, err
			}
			sealed = append(sealed, SealedRecord{Ref: c.Ref, Kind: c.Kind, Owner: c.Owner, CreatedAt: ci.CreatedAt,
				Fields: json.RawMessage(c.Secret)})
		}
	}
	return sealed, withheld, nil
}

func zeroSealed(recs []SealedRecord) {
	for _, r := range recs {
		clear(r.Fields)
	}
}

// buildArchive lays out the tar: the manifest first, then the records and
// the opened sealed records, each file's digest in the manifest.
func buildArchive(out SubjectExport, sealed []SealedRecord, withheld []WithheldRecord) ([]byte, ExportManifest, error) {
	m := ExportManifest{
		Format: ExportFormat, GeneratedAt: out.GeneratedAt, SubjectPseudonym: out.SubjectPseudonym,
		Included: map[string]int{"sealed_records": len(sealed), "legal_holds": len(out.LegalHolds), "audit_entries": len(out.AuditEntries)},
		Withheld: append(withheld,
			WithheldRecord{What: "subject keys", Reason: reasonKeys}),
	}
	for table, rows := range out.Records {
		m.Included["records."+table] = len(rows)
	}
	for table, cols := range out.Withheld {
		m.Withheld = append(m.Withheld, WithheldRecord{What: table + "." + strings.Join(cols, ", "), Reason: reasonCiphertext})
	}
	records, err := json.MarshalIndent(out, "", "  ")
	if err != nil {
		return nil, m, fmt.Errorf("compliance: export archive: %w", err)
	}
	if sealed == nil {
		sealed = []SealedRecord{}
	}
	opened, err := json.MarshalIndent(sealed, "", "  ")
	defer clear(opened)
	if err != nil {
		return nil, m, fmt.Errorf("compliance: export archive: %w", err)
	}
	files := []struct {
		name string
		body []byte
	}{{"records.json", records}, {"sealed.json", opened}}
	for _, f := range files {
		sum := sha256.Sum256(f.body)
		m.Files = append(m.Files, ManifestFile{Name: f.name, Bytes: len(f.body), SHA256: hex.EncodeToString(sum[:])})
	}
	manifest, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, m, fmt.Errorf("compliance: export archive: %w", err)
	}
	// Sized once, so that growing leaves no stray copy of the plaintext.
	var buf bytes.Buffer
	buf.Grow(len(manifest) + len(records) + len(opened) + 8*1024)
	tw := tar.NewWriter(&buf)
	for _, f := range append([]struct {
		name string
		body []byte
	}{{"manifest.json", manifest}}, files...) {
		hdr := &tar.Header{Name: f.name, Mode: 0o600, Size: int64(len(f.body)), ModTime: out.GeneratedAt, Format: tar.FormatPAX}
		if err := tw.WriteHeader(hdr); err != nil {
			return buf.Bytes(), m, fmt.Errorf("compliance: export archive: %w", err)
		}
		if _, err := tw.Write(f.body); err != nil {
			return buf.Bytes(), m, fmt.Errorf("compliance: export archive: %w", err)
		}
	}
	if err := tw.Close(); err != nil {
		return buf.Bytes(), m, fmt.Errorf("compliance: export archive: %w", err)
	}
	return buf.Bytes(), m, nil
}

// encryptTo encrypts plain to the recipient in age's binary format.
func encryptTo(r age.Recipient, plain []byte) ([]byte, error) {
	var buf bytes.Buffer
	w, err := age.Encrypt(&buf, r)
	if err != nil {
		return nil, fmt.Errorf("compliance: encrypt export: %w", err)
	}
	if _, err := w.Write(plain); err != nil {
		return nil, fmt.Errorf("compliance: encrypt export: %w", err)
	}
	if err := w.Close(); err != nil {
		return nil, fmt.Errorf("compliance: encrypt export: %w", err)
	}
	return buf.Bytes(), nil
}
