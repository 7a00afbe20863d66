package testenv

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// S3Server is an S3-compatible service running for one test.
type S3Server struct {
	Endpoint  string // 127.0.0.1:port (plain HTTP)
	Region    string
	Bucket    string // created empty
	AccessKey string
	SecretKey string
	// Client reaches the bucket, to look at what a test stored.
	Client *minio.Client
}

// URL is the -storage value of the bucket under prefix.
func (s *S3Server) URL(prefix string) string {
	return "s3://" + s.Bucket + "/" + prefix + "?endpoint=" + s.Endpoint + "&region=" + s.Region + "&secure=false"
}

// Env is the environment entries that give a server process the
// service's credentials.
func (s *S3Server) Env() []string {
	return []string{"AWS_ACCESS_KEY_ID=" + s.AccessKey, "AWS_SECRET_ACCESS_KEY=" + s.SecretKey}
}

// Keys lists the bucket's object keys under prefix.
func (s *S3Server) Keys(t testing.TB, prefix string) []string {
	t.Helper()
	var keys []string
	for o := range s.Client.ListObjects(context.Background(), s.Bucket, minio.ListObjectsOptions{Prefix: prefix, Recursive: true}) {
		if o.Err != nil {
			t.Fatalf("list %s: %v", prefix, o.Err)
		}
		keys = append(keys, o.Key)
	}
	return keys
}

// S3 starts versitygw, the S3 gateway pinned as a tool in go.mod (built by
// `go tool` from the module cache), on its posix backend in a temporary
// directory, with random credentials, and creates a bucket. The gateway
// stops when the test ends. Without the go command or the module it
// skips, or under FALOCAL_REQUIRE_ASSETS=1 fails; under -short too (its
// first build takes minutes), unless FALOCAL_REQUIRE_ASSETS=1.
func S3(t testing.TB) *S3Server {
	t.Helper()
	if testing.Short() && !required() {
		t.Skip("the versitygw S3 gateway is not built under -short")
	}
	goCmd, err := exec.LookPath("go")
	if err != nil {
		missing(t, "the go command (to build the versitygw S3 gateway)")
	}
	// -n builds the tool into the build cache and prints its path.
	out, err := exec.Command(goCmd, "tool", "-n", "versitygw").CombinedOutput()
	bin := strings.TrimSpace(string(out))
	if err != nil || bin == "" {
		missing(t, "the versitygw S3 gateway (go tool -n versitygw: "+strings.TrimSpace(string(out))+")")
	}
	s := &S3Server{Region: "us-east-1", Bucket: "falocal-test", AccessKey: randHex(t, 10), SecretKey: randHex(t, 20)}
	s.Endpoint = "127.0.0.1:" + strconv.Itoa(freePort(t))
	root := t.TempDir()
	var logs lockedBuffer
	cmd := exec.Command(bin, "--port", s.Endpoint, "--access", s.AccessKey, "--secret", s.SecretKey,
		"--region", s.Region, "posix", root)
	cmd.Env = os.Environ()
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		missing(t, "the versitygw S3 gateway ("+err.Error()+")")
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("versitygw output:\n%s", logs.String())
		}
	})
	s.Client, err = minio.New(s.Endpoint, &minio.Options{
		Creds: credentials.NewStaticV4(s.AccessKey, s.SecretKey, ""), Region: s.Region})
	if err != nil {
		t.Fatal(err)
	}
	// Ready once it accepts the bucket.
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err = s.Client.MakeBucket(ctx, s.Bucket, minio.MakeBucketOptions{Region: s.Region})
		cancel()
		if err == nil {
			return s
		}
		select {
		case <-exited:
			missing(t, "a running versitygw S3 gateway (it exited: "+logs.String()+")")
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			missing(t, "a running versitygw S3 gateway (no bucket after 30 s: "+err.Error()+")")
		}
	}
}

// lockedBuffer collects a process's output while the test may read it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func randHex(t testing.TB, n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

func freePort(t testing.TB) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
