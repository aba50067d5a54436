// Package procs builds natsaga's programs and runs them as separate OS
// processes: the flood simulation, the chaos test and the benchmark use it
// to start, kill and restart real coordinators and agents.
package procs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Programs are the cmd/ packages a simulation runs.
var Programs = []string{"coordinator", "household-agent", "government-agent", "insurer-agent", "contractor-agent"}

// Module is natsaga's module path: [ModuleRoot] looks for its go.mod.
const Module = "github.com/natsaga/natsaga"

// ModuleRoot returns the directory of natsaga's go.mod above the working
// directory, or an error when there is none (a checkout of another module
// does not count).
func ModuleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if data, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil {
			if isModule(data) {
				return dir, nil
			}
			return "", fmt.Errorf("%s is not natsaga's go.mod: run from the natsaga repository", filepath.Join(dir, "go.mod"))
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory: run from the natsaga repository")
		}
		dir = parent
	}
}

// isModule reports whether the go.mod data declares [Module].
func isModule(data []byte) bool {
	for line := range strings.Lines(string(data)) {
		if f := strings.Fields(line); len(f) == 2 && f[0] == "module" {
			return strings.Trim(f[1], `"`) == Module
		}
	}
	return false
}

// ErrNotInstalled is returned by [Find] when a program is neither beside
// the running executable nor on PATH.
var ErrNotInstalled = errors.New("program not installed")

// Beside returns the path of each program of names in the directory of
// the running executable, as `go install ./cmd/...` leaves them, or an
// error wrapping [ErrNotInstalled] when one is not there.
func Beside(names ...string) (map[string]string, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("executable: %w", err)
	}
	if resolved, err := filepath.EvalSymlinks(self); err == nil {
		self = resolved
	}
	return inDir(filepath.Dir(self), names)
}

// inDir returns the path of each program of names in dir.
func inDir(dir string, names []string) (map[string]string, error) {
	paths := map[string]string{}
	for _, n := range names {
		p := filepath.Join(dir, n)
		if fi, err := os.Stat(p); err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
			return nil, fmt.Errorf("%s in %s: %w", n, dir, ErrNotInstalled)
		}
		paths[n] = p
	}
	return paths, nil
}

// OnPath returns the path of each program of names on PATH, or an error
// wrapping [ErrNotInstalled] naming the first that is not there.
func OnPath(names ...string) (map[string]string, error) {
	paths := map[string]string{}
	for _, n := range names {
		p, err := exec.LookPath(n)
		if err != nil {
			return nil, fmt.Errorf("%s on PATH: %w: %w", n, ErrNotInstalled, err)
		}
		paths[n] = p
	}
	return paths, nil
}

// NATSServer is the import path of nats-server's main package, at the
// version go.mod pins; Build accepts it as a name.
const NATSServer = "github.com/nats-io/nats-server/v2"

// Build compiles the programs named in names into dir with the go command
// and returns the path of each binary by name. A name is a cmd/ directory
// ("coordinator") or [NATSServer]. With race set the binaries are built
// with the race detector.
func Build(ctx context.Context, dir string, race bool, names ...string) (map[string]string, error) {
	root, err := ModuleRoot()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("build: %w", err)
	}
	args := []string{"build", "-o", dir + string(os.PathSeparator)}
	if race {
		args = append(args, "-race")
	}
	paths := map[string]string{}
	for _, n := range names {
		if n == NATSServer {
			args = append(args, n)
			paths[n] = filepath.Join(dir, "nats-server")
			continue
		}
		args = append(args, "./cmd/"+n)
		paths[n] = filepath.Join(dir, n)
	}
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return paths, nil
}

// Proc is a running program.
type Proc struct {
	Name string
	path string
	args []string
	env  []string
	out  io.Writer

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
	err  error
	last lastLine
}

// Start runs the binary at path with args and env (added to this process's
// environment), writing its output to out (nil: discarded).
func Start(name, path string, args, env []string, out io.Writer) (*Proc, error) {
	p := &Proc{Name: name, path: path, args: args, env: env, out: out}
	return p, p.start()
}

func (p *Proc) start() error {
	cmd := exec.Command(p.path, p.args...)
	cmd.Env = append(os.Environ(), p.env...)
	out := io.Writer(&p.last)
	if p.out != nil {
		out = io.MultiWriter(p.out, &p.last)
	}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", p.Name, err)
	}
	done := make(chan struct{})
	p.mu.Lock()
	p.cmd, p.done, p.err = cmd, done, nil
	p.mu.Unlock()
	go func() {
		err := cmd.Wait()
		p.mu.Lock()
		p.err = err
		p.mu.Unlock()
		close(done)
	}()
	return nil
}

// PID is the process id of the current run.
func (p *Proc) PID() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cmd.Process.Pid
}

// Done is closed when the current run exits.
func (p *Proc) Done() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.done
}

// Err is the current run's exit error, once Done is closed.
func (p *Proc) Err() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

// LastLine is the last whole line the program wrote (cut to
// [MaxLastLine] bytes), "" before its first: once it has exited, most
// often why.
func (p *Proc) LastLine() string { return p.last.String() }

// MaxLastLine bounds [Proc.LastLine].
const MaxLastLine = 1024

// lastLine keeps the last whole line written to it, its first
// MaxLastLine bytes.
type lastLine struct {
	mu      sync.Mutex
	partial []byte // the line being written, cut
	line    string
}

func (l *lastLine) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for rest := p; len(rest) > 0; {
		i := bytes.IndexByte(rest, '\n')
		chunk := rest
		if i >= 0 {
			chunk = rest[:i]
		}
		if room := MaxLastLine - len(l.partial); room > 0 {
			l.partial = append(l.partial, chunk[:min(room, len(chunk))]...)
		}
		if i < 0 {
			break
		}
		l.line, l.partial = string(l.partial), l.partial[:0]
		rest = rest[i+1:]
	}
	return len(p), nil
}

func (l *lastLine) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.line
}

// Kill sends SIGKILL and waits for the process to exit.
func (p *Proc) Kill() {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	_ = cmd.Process.Signal(syscall.SIGKILL)
	<-done
}

// Signal sends sig to the current run.
func (p *Proc) Signal(sig os.Signal) error {
	p.mu.Lock()
	cmd := p.cmd
	p.mu.Unlock()
	return cmd.Process.Signal(sig)
}

// Stop sends SIGTERM and waits up to timeout for a clean exit, then kills.
// It returns the exit error of a process that did not exit cleanly.
func (p *Proc) Stop(timeout time.Duration) error {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
		return p.Err()
	case <-time.After(timeout):
		p.Kill()
		return fmt.Errorf("%s did not stop within %s", p.Name, timeout)
	}
}

// Restart starts the program again with the same arguments. The previous
// run must have exited.
func (p *Proc) Restart() error {
	<-p.Done()
	return p.start()
}

// Lines serializes the output of many writers into one, a whole line at a
// time, so that the lines of processes that write at once, and of the
// program's own logger, do not cut into one another. It is safe for
// concurrent use.
type Lines struct {
	mu sync.Mutex
	w  io.Writer
}

// NewLines returns Lines that write to w.
func NewLines(w io.Writer) *Lines { return &Lines{w: w} }

// Writer returns a writer whose complete lines go to l's writer, each in
// one write; a line waits for its newline, and a last line without one
// is not written. It is safe for concurrent use; give each process its
// own.
func (l *Lines) Writer() io.Writer { return &lineWriter{l: l} }

type lineWriter struct {
	l   *Lines
	mu  sync.Mutex
	buf []byte
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	end := bytes.LastIndexByte(w.buf, '\n') + 1
	if end == 0 {
		return len(p), nil
	}
	w.l.mu.Lock()
	_, err := w.l.w.Write(w.buf[:end])
	w.l.mu.Unlock()
	w.buf = append(w.buf[:0], w.buf[end:]...)
	return len(p), err
}
