package api_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"testing"
	"time"

	"github.com/kluis-dev/kluis/migrations"
)

// pgServer is a Postgres server of the test's own, on a free loopback port
// with its data in t.TempDir(), that the test may stop and start again
// without disturbing the shared server other test packages use at the same
// time.
type pgServer struct {
	t       *testing.T
	bin     string   // directory holding initdb and pg_ctl
	asUser  []string // runuser prefix when running as root; nil otherwise
	data    string
	sockets string
	logFile string
	port    int
}

// pgCommandTimeout bounds each initdb or pg_ctl run, so a broken machine
// fails the test instead of hanging it.
const pgCommandTimeout = time.Minute

// startPgServer creates, starts and migrates a private cluster; it is shut
// down at t's end. Without Postgres server binaries on the machine the test
// skips, except under CI, where they are installed and a skip would hide
// the test.
func startPgServer(t *testing.T) *pgServer {
	t.Helper()
	bin := pgBinDir()
	if bin == "" {
		if os.Getenv("CI") != "" {
			t.Fatal("no Postgres server binaries (initdb, pg_ctl) under /usr/lib/postgresql/*/bin or on PATH; CI is set, so this fails")
		}
		t.Skip("no Postgres server binaries (initdb, pg_ctl) under /usr/lib/postgresql/*/bin or on PATH: skipping the test that stops a Postgres server")
	}
	s := &pgServer{t: t, bin: bin}
	base := t.TempDir()
	s.data, s.sockets, s.logFile = filepath.Join(base, "data"), filepath.Join(base, "sockets"), filepath.Join(base, "postgres.log")
	if err := os.Mkdir(s.sockets, 0o700); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() == 0 {
		s.asUser = s.dropRoot(base)
	}
	s.run("initdb", "-D", s.data, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync")
	// A free port can be taken between the probe and the server's bind: try
	// another one then.
	var err error
	for range 3 {
		s.port = freePort(t)
		if _, err = s.pgCtl("start"); err == nil {
			break
		}
	}
	if err != nil {
		log, _ := os.ReadFile(s.logFile)
		t.Fatalf("pg_ctl start: %v\n%s", err, log)
	}
	t.Cleanup(func() { _, _ = s.pgCtl("stop", "-m", "immediate") })
	ctx, cancel := context.WithTimeout(context.Background(), pgCommandTimeout)
	defer cancel()
	if _, err := migrations.Up(ctx, s.url()); err != nil {
		t.Fatalf("migrate the private server: %v", err)
	}
	return s
}

// url is the server's postgres database (the cluster is the test's, so no
// other database is needed), with a short connect timeout.
func (s *pgServer) url() string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable&connect_timeout=2", s.port)
}

// stop shuts the server down as an operator would for a restart: open
// sessions are terminated, new connections refused.
func (s *pgServer) stop() {
	s.t.Helper()
	if out, err := s.pgCtl("stop", "-m", "fast"); err != nil {
		s.t.Fatalf("pg_ctl stop: %v\n%s", err, out)
	}
}

// start starts it again on the same port and data.
func (s *pgServer) start() {
	s.t.Helper()
	if _, err := s.pgCtl("start"); err != nil {
		log, _ := os.ReadFile(s.logFile)
		s.t.Fatalf("pg_ctl start: %v\n%s", err, log)
	}
}

// pgCtl runs pg_ctl on the cluster, waiting for the action to complete.
func (s *pgServer) pgCtl(action string, args ...string) ([]byte, error) {
	opts := fmt.Sprintf("-c listen_addresses=127.0.0.1 -p %d -k %s -c fsync=off -c full_page_writes=off", s.port, s.sockets)
	full := append([]string{action, "-D", s.data, "-w", "-t", "30", "-l", s.logFile, "-o", opts}, args...)
	return s.exec("pg_ctl", full...)
}

// run runs a server binary and fails the test if it fails.
func (s *pgServer) run(name string, args ...string) {
	s.t.Helper()
	if out, err := s.exec(name, args...); err != nil {
		s.t.Fatalf("%s: %v\n%s", name, err, out)
	}
}

func (s *pgServer) exec(name string, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), pgCommandTimeout)
	defer cancel()
	argv := append(append(append([]string{}, s.asUser...), filepath.Join(s.bin, name)), args...)
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...) // #nosec G204 -- the test's own binaries and arguments
	// The server's own output goes to its log file (-l), so these pipes close
	// when pg_ctl exits even though the server keeps running.
	return cmd.CombinedOutput()
}

// dropRoot makes base the postgres user's (initdb refuses to run as root)
// and returns the command prefix that runs a binary as that user.
func (s *pgServer) dropRoot(base string) []string {
	s.t.Helper()
	u, err := user.Lookup("postgres")
	if err != nil {
		s.t.Fatalf("running as root, and initdb refuses root: no postgres user to run it as: %v", err)
	}
	runuser, err := exec.LookPath("runuser")
	if err != nil {
		s.t.Fatalf("running as root, and initdb refuses root: no runuser to run it as postgres: %v", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	for _, p := range []string{base, s.sockets} {
		if err := os.Chown(p, uid, gid); err != nil {
			s.t.Fatal(err)
		}
	}
	// t.TempDir's per-test parent is root's and 0700: let postgres through
	// it (search only, no listing).
	if err := os.Chmod(filepath.Dir(base), 0o711); err != nil { // #nosec G302 -- a test temp dir, search permission only
		s.t.Fatal(err)
	}
	return []string{runuser, "-u", "postgres", "--"}
}

// pgBinDir finds the newest Postgres server binaries: Debian's versioned
// directories first, then PATH; "" if there are none.
func pgBinDir() string {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	version := func(d string) int {
		v, _ := strconv.Atoi(filepath.Base(filepath.Dir(d)))
		return v
	}
	sort.Slice(dirs, func(i, j int) bool { return version(dirs[i]) > version(dirs[j]) })
	for _, d := range dirs {
		if isFile(filepath.Join(d, "initdb")) && isFile(filepath.Join(d, "pg_ctl")) {
			return d
		}
	}
	if initdb, err := exec.LookPath("initdb"); err == nil && isFile(filepath.Join(filepath.Dir(initdb), "pg_ctl")) {
		return filepath.Dir(initdb)
	}
	return ""
}

func isFile(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular()
}

// freePort returns a loopback TCP port nothing listens on right now.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}
