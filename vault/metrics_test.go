package vault

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestRotationMetricsShowTheRunsProgress(t *testing.T) {
	t.Parallel()
	m := NewRotationMetrics(nil)
	m.Observe(RotationResult{Step: StepRewrap, Epoch: 3, Rewrapped: 250, Migrated: 10, Remaining: 750, RewrapFailed: 2})
	want := `
# HELP kluis_key_rotation_running 1 while a rotation run is in progress here.
# TYPE kluis_key_rotation_running gauge
kluis_key_rotation_running 1
# HELP kluis_key_rotation_subject_keys_failed Subject keys the last rotation run could not re-wrap (keystore.rotation_failures).
# TYPE kluis_key_rotation_subject_keys_failed gauge
kluis_key_rotation_subject_keys_failed 2
# HELP kluis_key_rotation_subject_keys_remaining Subject keys not yet re-wrapped under the active keyring epoch, as the last rotation run last counted.
# TYPE kluis_key_rotation_subject_keys_remaining gauge
kluis_key_rotation_subject_keys_remaining 750
# HELP kluis_keyring_active_epoch The active keyring epoch, as the last rotation run saw it.
# TYPE kluis_keyring_active_epoch gauge
kluis_keyring_active_epoch 3
`
	if err := testutil.CollectAndCompare(m, strings.NewReader(want), "kluis_key_rotation_running", "kluis_key_rotation_subject_keys_failed",
		"kluis_key_rotation_subject_keys_remaining", "kluis_keyring_active_epoch"); err != nil {
		t.Fatal(err)
	}
	m.Observe(RotationResult{Step: StepDone, Epoch: 3, Rewrapped: 1000})
	done := `
# HELP kluis_key_rotation_running 1 while a rotation run is in progress here.
# TYPE kluis_key_rotation_running gauge
kluis_key_rotation_running 0
`
	if err := testutil.CollectAndCompare(m, strings.NewReader(done), "kluis_key_rotation_running"); err != nil {
		t.Fatal(err)
	}
}
