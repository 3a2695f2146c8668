package kmstest

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"

	"github.com/kluis-dev/kluis/vault/awskms"
)

// Provider builds an awskms.Provider whose real SDK client talks to srv, with
// short backoff so that retries do not slow tests, and the developer's own
// AWS files kept out. opts come last and win.
func Provider(t testing.TB, srv *Server, opts ...awskms.Option) *awskms.Provider {
	t.Helper()
	base := []awskms.Option{
		awskms.WithLoadOptions(
			config.WithRegion(Region),
			config.WithCredentialsProvider(credentials.NewStaticCredentialsProvider(AccessKeyID, SecretAccessKey, "")),
			config.WithBaseEndpoint(srv.URL),
			config.WithSharedConfigFiles([]string{filepath.Join(t.TempDir(), "none")}),
			config.WithSharedCredentialsFiles([]string{filepath.Join(t.TempDir(), "none")}),
		),
		awskms.WithMaxAttempts(3),
		awskms.WithMaxBackoff(5 * time.Millisecond),
	}
	p, err := awskms.New(context.Background(), srv.KeyID(), append(base, opts...)...)
	if err != nil {
		t.Fatalf("kmstest: provider: %v", err)
	}
	return p
}
