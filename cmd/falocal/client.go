package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/falocal/falocal/api/files"
	"github.com/falocal/falocal/api/queue"
	"github.com/falocal/falocal/pipelines"
)

// Exit codes of 'falocal run', for scripts.
const (
	exitOK          = 0
	exitFailed      = 1 // the server refused or failed the request
	exitUsage       = 2
	exitRejected    = 3 // 422: the input is invalid
	exitUnreachable = 4 // no answer from the server, or the key was refused
	exitInterrupted = 130
)

const runUsage = `usage: falocal run ENDPOINT_ID [INPUT…] [-o DIR] [--url URL] [--key KEY]

Submits a request to a running falocal server through its queue, prints its
logs to stderr as they arrive, downloads the output files into DIR (with -o)
and prints the result JSON on stdout.

  falocal run fal-ai/imageutils/rembg image_url=@photo.jpg -o out/
  falocal run fal-ai/esrgan image_url=@photo.jpg scale=2 -o out/

Inputs (the fields of the endpoint's JSON input):
  key=value    a string; a JSON number, true or false is sent as that
               (scale=2, sync_mode=true)
  key:=JSON    raw JSON, for anything else (tags:='["a","b"]', seed:=7,
               prompt:='"42"' for a string that looks like a number)
  key=@FILE    uploads FILE to the server's storage and sends its URL

Flags:
  -o DIR       download every output file of the result into DIR
  --url URL    the server (default $FALOCAL_URL, else http://127.0.0.1:8080)
  --key KEY    the API key, sent as 'Authorization: Key KEY' (default $FAL_KEY)

Ctrl-C cancels the request on the server before exiting.

Exit codes:
  0    done
  1    the server refused or failed the request (its error is printed)
  2    bad command line, an unreadable file to upload or an unusable -o DIR
  3    the input was rejected (422); each invalid field is printed
  4    the server cannot be reached, or it refused the key (401, 403)
  130  interrupted (Ctrl-C); a submitted request was cancelled on the server
`

// runArgs is a parsed 'falocal run' command line.
type runArgs struct {
	endpoint string
	input    map[string]any
	uploads  map[string]string // input key → local file to upload
	outDir   string
	url, key string
}

// usageError is a bad command line (exit 2).
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{fmt.Sprintf(format, args...)}
}

// jsonNumber is JSON's number grammar: "2" and "0.5" are numbers, "007" and
// "1e" stay strings.
var jsonNumber = regexp.MustCompile(`^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?$`)

// parseRunArgs reads the command line; flags may come before, between or
// after the inputs.
func parseRunArgs(args []string, getenv func(string) string) (*runArgs, error) {
	a := &runArgs{input: map[string]any{}, uploads: map[string]string{}}
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&a.outDir, "o", "", "")
	fs.StringVar(&a.url, "url", "", "")
	fs.StringVar(&a.key, "key", getenv("FAL_KEY"), "")
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if err == flag.ErrHelp {
				return nil, err
			}
			return nil, usagef("%v", err)
		}
		rest := fs.Args()
		if len(rest) == 0 {
			break
		}
		if n := len(args) - len(rest); n > 0 && args[n-1] == "--" {
			pos = append(pos, rest...) // after --, everything is an input
			break
		}
		pos, args = append(pos, rest[0]), rest[1:]
	}

	if a.url == "" {
		a.url = getenv("FALOCAL_URL")
	}
	if a.url == "" {
		a.url = "http://127.0.0.1:8080"
	}
	u, err := url.Parse(a.url)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, usagef("--url %q is not an http:// or https:// URL", a.url)
	}
	a.url = strings.TrimRight(a.url, "/")

	if len(pos) == 0 {
		return nil, usagef("missing the endpoint id (e.g. fal-ai/imageutils/rembg)")
	}
	a.endpoint = strings.Trim(pos[0], "/")
	if strings.ContainsAny(a.endpoint, "=?# ") || !strings.Contains(a.endpoint, "/") {
		return nil, usagef("the first argument must be an endpoint id such as fal-ai/imageutils/rembg, not %q", pos[0])
	}
	for _, item := range pos[1:] {
		key, val, file, err := parseInput(item)
		if err != nil {
			return nil, err
		}
		if _, dup := a.input[key]; dup {
			return nil, usagef("%s: %q is given twice", item, key)
		}
		if _, dup := a.uploads[key]; dup {
			return nil, usagef("%s: %q is given twice", item, key)
		}
		if file != "" {
			// Checked now: a typo must not cost a round trip to the server.
			st, err := os.Stat(file)
			if err != nil {
				return nil, usagef("%s: %v", item, err)
			}
			if !st.Mode().IsRegular() {
				return nil, usagef("%s: %s is not a regular file", item, file)
			}
			a.uploads[key] = file
			continue
		}
		a.input[key] = val
	}
	return a, nil
}

// parseInput reads one key=value, key:=JSON or key=@FILE.
func parseInput(item string) (key string, val any, file string, err error) {
	i := strings.IndexByte(item, '=')
	if i < 0 {
		return "", nil, "", usagef("%q is not key=value, key:=JSON or key=@FILE", item)
	}
	key, v := item[:i], item[i+1:]
	raw := strings.HasSuffix(key, ":")
	key = strings.TrimSuffix(key, ":")
	if key == "" {
		return "", nil, "", usagef("%q has no key before the =", item)
	}
	switch {
	case raw:
		dec := json.NewDecoder(strings.NewReader(v))
		dec.UseNumber() // numbers go out as written, not through float64
		if err := dec.Decode(&val); err != nil {
			return "", nil, "", usagef("%s: the value after := is not JSON: %v", item, err)
		}
		if dec.More() || dec.InputOffset() < int64(len(strings.TrimSpace(v))) {
			return "", nil, "", usagef("%s: the value after := is more than one JSON value", item)
		}
		return key, val, "", nil
	case strings.HasPrefix(v, "@"):
		if v == "@" {
			return "", nil, "", usagef("%s: no file name after the @", item)
		}
		return key, nil, v[1:], nil
	case v == "true" || v == "false":
		return key, v == "true", "", nil
	case jsonNumber.MatchString(v):
		return key, json.Number(v), "", nil
	}
	return key, v, "", nil
}

func clientRunCmd(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	a, err := parseRunArgs(args, os.Getenv)
	if err == flag.ErrHelp {
		fmt.Fprint(stdout, runUsage)
		return exitOK
	}
	if err != nil {
		fmt.Fprintf(stderr, "falocal run: %v\n(falocal run -h shows the usage)\n", err)
		return exitUsage
	}
	if a.outDir != "" {
		if err := os.MkdirAll(a.outDir, 0o755); err != nil {
			fmt.Fprintf(stderr, "falocal run: -o: %v\n", err)
			return exitUsage
		}
	}
	c := &client{args: a, hc: &http.Client{}, p: newRunProgress(stderr), reconnectFor: reconnectFor, submitWait: submitWait}
	defer c.p.close()
	return c.run(ctx, stdout)
}

// client runs one request against the server.
type client struct {
	args *runArgs
	hc   *http.Client
	p    *runProgress
	// reconnectFor is how long a lost status stream is tried again.
	reconnectFor time.Duration
	// submitWait bounds the wait for the answer to the submission.
	submitWait time.Duration
}

// failure is how a step ended short of success: the exit code and what to
// tell the user.
type failure struct {
	code int
	msg  string
}

func (f *failure) Error() string { return f.msg }

// submitReply is the queue's answer to a submission.
type submitReply struct {
	RequestID   string `json:"request_id"`
	StatusURL   string `json:"status_url"`
	ResponseURL string `json:"response_url"`
	CancelURL   string `json:"cancel_url"`
}

func (c *client) run(ctx context.Context, stdout io.Writer) int {
	fail := func(err error) int {
		c.p.close()
		var f *failure
		if !errors.As(err, &f) {
			f = &failure{exitFailed, err.Error()}
		}
		if ctx.Err() != nil {
			f = &failure{exitInterrupted, "interrupted"}
		}
		fmt.Fprintln(c.p.w, "falocal run:", f.msg)
		return f.code
	}
	keys := make([]string, 0, len(c.args.uploads))
	for k := range c.args.uploads {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		u, err := c.upload(ctx, c.args.uploads[k])
		if err != nil {
			return fail(err)
		}
		c.args.input[k] = u
	}
	body, err := json.Marshal(c.args.input)
	if err != nil {
		return fail(err)
	}
	var sub submitReply
	c.p.status("submitting to " + c.args.endpoint)
	// Ctrl-C does not abort a submission under way: the server may have
	// queued it already, and only its answer names the request to cancel.
	sctx, sdone := context.WithTimeout(context.WithoutCancel(ctx), c.submitWait)
	err = c.call(sctx, "POST", c.args.url+"/"+c.args.endpoint, bytes.NewReader(body), "application/json", &sub)
	sdone()
	if err != nil {
		return fail(err)
	}
	if sub.RequestID == "" || sub.StatusURL == "" || sub.ResponseURL == "" {
		return fail(fmt.Errorf("the server's answer to the submission lacks request_id, status_url or response_url"))
	}
	c.p.line("falocal run: request " + sub.RequestID)
	if ctx.Err() != nil {
		return c.cancel(sub)
	}

	if err := c.follow(ctx, sub); err != nil {
		if ctx.Err() != nil {
			return c.cancel(sub)
		}
		return fail(err)
	}
	status, result, err := c.get(ctx, sub.ResponseURL)
	if err != nil {
		return fail(err)
	}
	if status != http.StatusOK {
		return fail(replyFailure("the request failed", status, result))
	}
	var out any
	dec := json.NewDecoder(bytes.NewReader(result))
	dec.UseNumber()
	if err := dec.Decode(&out); err != nil {
		return fail(fmt.Errorf("the result is not JSON: %v", err))
	}
	var saveErr error
	if c.args.outDir != "" {
		saveErr = c.saveFiles(ctx, out)
	}
	c.p.close()
	// Indented as the server wrote it (re-encoding would escape <, > and &).
	var pretty bytes.Buffer
	json.Indent(&pretty, bytes.TrimSpace(result), "", "  ")
	fmt.Fprintf(stdout, "%s\n", pretty.Bytes())
	if saveErr != nil {
		return fail(saveErr)
	}
	return exitOK
}

// cancel asks the server to cancel the request after Ctrl-C. The run's own
// context is done, so this call gets a fresh one.
func (c *client) cancel(sub submitReply) int {
	c.p.close()
	cancelURL := sub.CancelURL
	if cancelURL == "" {
		cancelURL = strings.TrimSuffix(sub.StatusURL, "/status") + "/cancel"
	}
	ctx, done := context.WithTimeout(context.Background(), 10*time.Second)
	defer done()
	var ans struct{ Status string }
	err := c.call(ctx, "PUT", cancelURL, nil, "", &ans)
	switch {
	case err == nil:
		fmt.Fprintf(c.p.w, "falocal run: interrupted; request %s cancelled (%s)\n", sub.RequestID, ans.Status)
	default:
		fmt.Fprintf(c.p.w, "falocal run: interrupted; cancelling request %s failed: %v\n", sub.RequestID, err)
	}
	return exitInterrupted
}

// do sends one request; a transport error becomes an exit-4 failure.
func (c *client) do(ctx context.Context, method, u string, body io.Reader, contentType string, size int64) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return nil, err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if size >= 0 && body != nil {
		req.ContentLength = size
	}
	if c.args.key != "" && sameOrigin(u, c.args.url) {
		// The key goes to our server only, never to a host a URL in a reply names.
		req.Header.Set("Authorization", "Key "+c.args.key)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		if errors.Is(ctx.Err(), context.Canceled) {
			return nil, &failure{exitInterrupted, "interrupted"}
		}
		return nil, &failure{exitUnreachable, fmt.Sprintf("cannot reach the server at %s (%v); is 'falocal serve' running? (--url or $FALOCAL_URL name another)", c.args.url, unwrapURLError(err))}
	}
	return resp, nil
}

func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// get fetches u and returns its status and body.
func (c *client) get(ctx context.Context, u string) (int, []byte, error) {
	resp, err := c.do(ctx, "GET", u, nil, "", -1)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, nil, &failure{exitUnreachable, fmt.Sprintf("reading %s: %v", u, err)}
	}
	return resp.StatusCode, b, nil
}

// call sends a request and decodes a 2xx JSON answer into out; any other
// status is a failure.
func (c *client) call(ctx context.Context, method, u string, body io.Reader, contentType string, out any) error {
	size := int64(-1)
	if r, ok := body.(*bytes.Reader); ok {
		size = int64(r.Len())
	}
	resp, err := c.do(ctx, method, u, body, contentType, size)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return &failure{exitUnreachable, fmt.Sprintf("reading %s: %v", u, err)}
	}
	if resp.StatusCode/100 != 2 {
		return replyFailure(method+" "+u, resp.StatusCode, b)
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("%s %s: the answer is not the JSON expected: %v", method, u, err)
	}
	return nil
}

// replyFailure turns an error reply in fal's shape ({"detail": …}) into a
// failure with its exit code.
func replyFailure(what string, status int, body []byte) *failure {
	var e struct {
		Detail    json.RawMessage `json:"detail"`
		ErrorType string          `json:"error_type"`
	}
	json.Unmarshal(body, &e)
	var text string
	var fields []pipelines.FieldError
	if json.Unmarshal(e.Detail, &text) != nil && json.Unmarshal(e.Detail, &fields) != nil {
		text = strings.TrimSpace(string(body))
		if len(text) > 500 {
			text = text[:500] + "…"
		}
	}
	if status == http.StatusUnprocessableEntity {
		var b strings.Builder
		b.WriteString("the input was rejected (422)")
		if text != "" {
			b.WriteString(": " + text)
		}
		for _, f := range fields {
			var loc []string
			for i, l := range f.Loc {
				if s := fmt.Sprint(l); i > 0 || s != "body" {
					loc = append(loc, s)
				}
			}
			where := strings.Join(loc, ".")
			if where == "" {
				where = "body"
			}
			fmt.Fprintf(&b, "\n  %s: %s", where, f.Msg)
			if f.Type != "" {
				fmt.Fprintf(&b, " (%s)", f.Type)
			}
		}
		return &failure{exitRejected, b.String()}
	}
	msg := fmt.Sprintf("%s: %d %s", what, status, http.StatusText(status))
	if text != "" {
		msg += ": " + text
	}
	if e.ErrorType != "" {
		msg += " (" + e.ErrorType + ")"
	}
	code := exitFailed
	if status == http.StatusUnauthorized || status == http.StatusForbidden {
		code = exitUnreachable
		msg += "\n(set the key with --key or $FAL_KEY)"
	}
	return &failure{code, msg}
}

// upload stores a local file on the server as fal's JS client does
// (initiate, then one PUT to the upload URL) and returns its URL.
func (c *client) upload(ctx context.Context, file string) (string, error) {
	f, err := os.Open(file)
	if err != nil {
		return "", &failure{exitUsage, err.Error()}
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return "", &failure{exitUsage, err.Error()}
	}
	ct := mime.TypeByExtension(filepath.Ext(file))
	if ct == "" {
		head := make([]byte, 512)
		n, _ := io.ReadFull(f, head)
		ct = http.DetectContentType(head[:n])
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return "", &failure{exitUsage, err.Error()}
		}
	}
	c.p.status(fmt.Sprintf("uploading %s (%s)", filepath.Base(file), files.HumanBytes(st.Size())))
	init, _ := json.Marshal(map[string]string{"content_type": ct, "file_name": filepath.Base(file)})
	var up struct {
		UploadURL string `json:"upload_url"`
		FileURL   string `json:"file_url"`
	}
	if err := c.call(ctx, "POST", c.args.url+"/rest/storage/upload/initiate", bytes.NewReader(init), "application/json", &up); err != nil {
		return "", err
	}
	if up.UploadURL == "" || up.FileURL == "" {
		return "", fmt.Errorf("the server's upload answer lacks upload_url or file_url")
	}
	resp, err := c.do(ctx, "PUT", up.UploadURL, f, ct, st.Size())
	if err != nil {
		return "", err
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return "", replyFailure("uploading "+file, resp.StatusCode, b)
	}
	return up.FileURL, nil
}

// reconnectFor is how long follow keeps trying to get the status stream
// back: long enough for the server to restart.
const reconnectFor = 30 * time.Second

// submitWait bounds the wait for the answer to a submission, which Ctrl-C
// does not cut short.
const submitWait = 30 * time.Second

// statusEvent is the part of fal's queue status this client shows.
type statusEvent struct {
	Status        queue.Status     `json:"status"`
	QueuePosition *int             `json:"queue_position"`
	Logs          []queue.LogEntry `json:"logs"`
}

// follow watches the request through the status stream until it
// completes, printing its logs. A stream that ends early (the server
// restarting) is opened again; it starts over with every log line, so
// those already printed are skipped.
func (c *client) follow(ctx context.Context, sub submitReply) error {
	su, err := url.Parse(sub.StatusURL)
	if err != nil {
		return fmt.Errorf("status_url %q: %v", sub.StatusURL, err)
	}
	su.Path += "/stream"
	q := su.Query()
	q.Set("logs", "1")
	su.RawQuery = q.Encode()
	printed := 0
	var lost time.Time // when the stream ended early with no event since
	for {
		done, events, err := c.stream(ctx, su.String(), &printed)
		if done || ctx.Err() != nil {
			return err
		}
		// Only a lost connection is worth another try.
		var f *failure
		if err != nil && !(errors.As(err, &f) && f.code == exitUnreachable) {
			return err
		}
		if events > 0 {
			lost = time.Time{} // the stream worked: each loss gets its own reconnectFor
		}
		if lost.IsZero() {
			lost = time.Now()
		} else if time.Since(lost) > c.reconnectFor {
			if err == nil {
				err = fmt.Errorf("the status stream keeps ending before the request completes")
			}
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// stream reads one status stream; done is true once COMPLETED arrived,
// events counts the events read.
func (c *client) stream(ctx context.Context, u string, printed *int) (done bool, events int, err error) {
	resp, err := c.do(ctx, "GET", u, nil, "", -1)
	if err != nil {
		return false, 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return false, 0, replyFailure("GET "+u, resp.StatusCode, b)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 64<<20) // an event's log lines can be long
	seen := 0
	var data []byte
	for sc.Scan() {
		line := sc.Bytes()
		if d, ok := bytes.CutPrefix(line, []byte("data:")); ok {
			if len(data) > 0 {
				data = append(data, '\n') // SSE joins an event's data lines with newlines
			}
			data = append(data, bytes.TrimPrefix(d, []byte(" "))...)
			continue
		}
		if len(line) != 0 || len(data) == 0 {
			continue // a comment (keep-alive) or another field
		}
		var ev statusEvent
		err := json.Unmarshal(data, &ev)
		data = data[:0]
		if err != nil {
			return false, events, fmt.Errorf("a status event is not JSON: %v", err)
		}
		events++
		switch ev.Status {
		case queue.InQueue:
			pos := ""
			if ev.QueuePosition != nil {
				pos = fmt.Sprintf(" (position %d)", *ev.QueuePosition)
			}
			c.p.status("in queue" + pos)
		case queue.InProgress:
			c.p.status("running")
		}
		for _, l := range ev.Logs {
			if seen++; seen > *printed {
				*printed++
				c.p.line("[" + l.Level + "] " + l.Message)
			}
		}
		if ev.Status == queue.Completed {
			c.p.status("completed")
			return true, events, nil
		}
	}
	if ctx.Err() != nil {
		return false, events, ctx.Err()
	}
	if errors.Is(sc.Err(), bufio.ErrTooLong) {
		return false, events, fmt.Errorf("a status event is over 64 MiB") // it would be again on the next try
	}
	return false, events, nil
}

// outputFile is a file the result names.
type outputFile struct{ url, name string }

// findFiles collects the file URLs of a result: every "url" string of an
// object (fal's File and Image objects), anywhere in it, in a fixed order.
func findFiles(v any, out *[]outputFile) {
	switch v := v.(type) {
	case map[string]any:
		if u, ok := v["url"].(string); ok && (strings.HasPrefix(u, "http://") || strings.HasPrefix(u, "https://") || strings.HasPrefix(u, "data:")) {
			name, _ := v["file_name"].(string)
			*out = append(*out, outputFile{u, name})
		}
		keys := make([]string, 0, len(v))
		for k := range v {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			findFiles(v[k], out)
		}
	case []any:
		for _, e := range v {
			findFiles(e, out)
		}
	}
}

// saveFiles downloads every file of the result into the output directory.
func (c *client) saveFiles(ctx context.Context, result any) error {
	var outs []outputFile
	findFiles(result, &outs)
	used := map[string]bool{}
	for i, f := range outs {
		name := safeName(f.name)
		if name == "" && !strings.HasPrefix(f.url, "data:") {
			if u, err := url.Parse(f.url); err == nil {
				name = safeName(path.Base(u.Path))
			}
		}
		if name == "" {
			name = fmt.Sprintf("output-%d", i+1)
		}
		// Two outputs with one name (an image and its mask, say) both stay.
		ext := filepath.Ext(name)
		stem := strings.TrimSuffix(name, ext)
		for n := 2; used[name]; n++ {
			name = fmt.Sprintf("%s-%d%s", stem, n, ext)
		}
		used[name] = true
		dst := filepath.Join(c.args.outDir, name)
		c.p.status("downloading " + name)
		n, err := c.download(ctx, f.url, dst)
		if err != nil {
			return err
		}
		c.p.line(fmt.Sprintf("falocal run: saved %s (%s)", dst, files.HumanBytes(n)))
	}
	return nil
}

// safeName is a file name's last element, or "" when none is usable.
func safeName(name string) string {
	name = filepath.Base(strings.ReplaceAll(name, "\\", "/"))
	if name == "." || name == ".." || name == "/" || strings.HasPrefix(name, ".") {
		return ""
	}
	return name
}

// download writes a file URL (or a data: URI) to dst, through a temporary
// file so an interrupted download leaves nothing half written under dst.
func (c *client) download(ctx context.Context, u, dst string) (int64, error) {
	var src io.Reader
	if rest, ok := strings.CutPrefix(u, "data:"); ok {
		meta, payload, ok := strings.Cut(rest, ",")
		if !ok {
			return 0, fmt.Errorf("a data: URI in the result has no comma")
		}
		var b []byte
		var err error
		if strings.HasSuffix(meta, ";base64") {
			b, err = base64.StdEncoding.DecodeString(payload)
		} else {
			var s string
			s, err = url.PathUnescape(payload)
			b = []byte(s)
		}
		if err != nil {
			return 0, fmt.Errorf("a data: URI in the result: %v", err)
		}
		src = bytes.NewReader(b)
	} else {
		resp, err := c.do(ctx, "GET", u, nil, "", -1)
		if err != nil {
			return 0, err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			b, _ := io.ReadAll(resp.Body)
			return 0, replyFailure("downloading "+u, resp.StatusCode, b)
		}
		src = resp.Body
	}
	tmp, err := os.CreateTemp(filepath.Dir(dst), ".falocal-download-*")
	if err != nil {
		return 0, &failure{exitUsage, err.Error()}
	}
	n, err := io.Copy(tmp, src)
	if err == nil {
		err = tmp.Chmod(0o644) // CreateTemp's 0600 is for secrets; outputs are ordinary files
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), dst)
	}
	if err != nil {
		os.Remove(tmp.Name())
		return 0, fmt.Errorf("downloading %s to %s: %v", u, dst, err)
	}
	return n, nil
}

func sameOrigin(a, b string) bool {
	ua, err1 := url.Parse(a)
	ub, err2 := url.Parse(b)
	return err1 == nil && err2 == nil && ua.Scheme == ub.Scheme && strings.EqualFold(ua.Host, ub.Host)
}

// runProgress shows what the client is doing on stderr: on a terminal,
// setup's status line, redrawn in place with the time elapsed; otherwise
// a plain line per change, which logs and pipes keep readable.
type runProgress struct {
	w     io.Writer
	start time.Time
	bar   *progress // on a terminal; nil elsewhere

	mu     sync.Mutex
	state  string
	closed bool
}

func newRunProgress(w io.Writer) *runProgress {
	p := &runProgress{w: w, start: time.Now()}
	if isTerminal(w) {
		p.bar = newProgress(w, true, nil)
	}
	return p
}

func (p *runProgress) status(s string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || s == p.state {
		return
	}
	p.state = s
	if p.bar == nil {
		fmt.Fprintf(p.w, "falocal run: %s (%.1fs)\n", s, time.Since(p.start).Seconds())
		return
	}
	p.bar.mu.Lock()
	defer p.bar.mu.Unlock()
	p.bar.step, p.bar.stepStart = s, p.start // the time shown is the run's
	p.bar.draw(true)
}

// line prints a line (a log line, a saved file) above the status line.
func (p *runProgress) line(s string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.bar == nil || p.closed {
		fmt.Fprintln(p.w, s)
		return
	}
	p.bar.Write([]byte(s + "\n"))
}

// close erases the status line for good and stops its ticker; it may be
// called more than once.
func (p *runProgress) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	p.closed = true
	if p.bar != nil {
		p.bar.close()
	}
}
