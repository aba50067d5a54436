package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// usageError is a flag floodsim found wrong only once it looked past the
// command line, such as an output file it cannot create: floodsim exits 2
// for it, as for any bad flag.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

// output is a file floodsim writes once the run has its report: the
// report as JSON or HTML, or the outcome log. It is opened before the run
// starts, so that a path floodsim cannot write fails at once, not after a
// run that (with -spawn=false, the agents' ledgers spent) cannot be
// repeated.
type output struct {
	flag, path string
	f          *os.File
	// created: the file did not exist before this run; written: the run
	// wrote it.
	created, written bool
}

// outputs are the output files of a run, in the order they are written.
type outputs struct{ outcomes, json, html *output }

// openOutputs opens for writing every output file c names (-outcomes,
// -json, -html), creating those that do not exist, and returns a
// usageError naming the flag of the first it cannot open. A file that
// exists is not truncated until it is written: if the run fails, it keeps
// what it held.
func openOutputs(c *config) (_ *outputs, err error) {
	o := &outputs{}
	defer func() {
		if err != nil {
			o.close()
		}
	}()
	named := map[string]string{} // path → the flag that named it
	for _, f := range []struct {
		name, path string
		out        **output
	}{{"outcomes", c.outcomesPath, &o.outcomes}, {"json", c.jsonPath, &o.json}, {"html", c.htmlPath, &o.html}} {
		if f.path == "" {
			continue
		}
		if other, ok := named[filepath.Clean(f.path)]; ok {
			return nil, usageError{fmt.Errorf("-%s and -%s name the same file, %s", other, f.name, f.path)}
		}
		named[filepath.Clean(f.path)] = f.name
		out := &output{flag: f.name, path: f.path, created: true}
		out.f, err = os.OpenFile(f.path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		if errors.Is(err, fs.ErrExist) {
			out.created = false
			out.f, err = os.OpenFile(f.path, os.O_WRONLY, 0)
		}
		if err != nil {
			return nil, usageError{fmt.Errorf("-%s: cannot write the file: %w", f.name, err)}
		}
		*f.out = out
		// Another name of a file named already (relative and absolute,
		// a link): the later write would replace the earlier.
		if other := o.sameAs(out); other != nil {
			return nil, usageError{fmt.Errorf("-%s and -%s name the same file, %s and %s", other.flag, f.name, other.path, f.path)}
		}
	}
	return o, nil
}

// sameAs returns the output opened before out that is the same regular
// file, if any.
func (o *outputs) sameAs(out *output) *output {
	st, err := out.f.Stat()
	if err != nil || !st.Mode().IsRegular() {
		return nil
	}
	for _, prev := range []*output{o.outcomes, o.json, o.html} {
		if prev == nil || prev == out || prev.f == nil {
			continue
		}
		if sameFile(st, prev.f) {
			return prev
		}
	}
	return nil
}

// write replaces the file's content with data and closes it. A file the
// run created is removed if the write fails, rather than left half
// written.
func (o *output) write(data []byte) error {
	var err error
	st, serr := o.f.Stat()
	switch {
	case serr == nil && sameFile(st, os.Stdout):
		// -json /dev/stdout: after what floodsim printed there, through
		// the descriptor that printed it, whatever stdout is.
		_, err = os.Stdout.Write(data)
	case serr == nil && sameFile(st, os.Stderr):
		_, err = os.Stderr.Write(data)
	case serr == nil && !st.Mode().IsRegular():
		// A pipe or a terminal: written as it comes.
		_, err = o.f.Write(data)
	default:
		if err = o.f.Truncate(0); err == nil {
			_, err = o.f.WriteAt(data, 0)
		}
	}
	if cerr := o.f.Close(); err == nil {
		err = cerr
	}
	o.f = nil
	if err != nil && o.created {
		_ = os.Remove(o.path)
	}
	o.written = err == nil
	return err
}

// close closes the files not written, removing those the run created: a
// run that failed before its report leaves no empty file behind, and a
// file that was there before as it was.
func (o *outputs) close() {
	for _, out := range []*output{o.outcomes, o.json, o.html} {
		if out == nil || out.f == nil {
			continue
		}
		_ = out.f.Close()
		out.f = nil
		if out.created && !out.written {
			_ = os.Remove(out.path)
		}
	}
}

// sameFile reports whether st is the file f is open on.
func sameFile(st os.FileInfo, f *os.File) bool {
	fst, err := f.Stat()
	return err == nil && os.SameFile(st, fst)
}
