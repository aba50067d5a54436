package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"

	"github.com/natsaga/natsaga/client"
	"github.com/natsaga/natsaga/saga"
)

// outcomesOptions are the flags of "natsaga outcomes".
type outcomesOptions struct {
	// path is the file the log goes to; "" means stdout.
	path string
	// ranked keeps only the sagas a simulation driver ranked.
	ranked bool
}

// errNoSagas and errNoRanked are returned when the bucket holds no saga to
// log: none at all, or, with -ranked, none a simulation driver ranked.
var (
	errNoSagas  = errors.New("no saga stored")
	errNoRanked = errors.New("no ranked saga stored: only the starts a simulation driver gives a rank are; without -ranked, every stored saga is logged")
)

// writeOutcomes reads every saga stored in the saga bucket and writes the
// outcome log (one JSON line per saga, sorted by id, as floodsim -outcomes
// writes it) to o.path or, with asJSON, to stdout; without either it
// prints the log as a table on stdout. It prints how many sagas the log
// holds and its SHA-256 on stderr, and returns errNoSagas (errNoRanked
// with o.ranked) when there is none.
func writeOutcomes(ctx context.Context, cl *client.Client, o outcomesOptions, asJSON bool, stdout, stderr io.Writer) error {
	var buf bytes.Buffer
	digest, n, err := cl.WriteOutcomes(ctx, &buf, o.ranked)
	if err != nil {
		return err
	}
	if n == 0 && o.ranked {
		return errNoRanked
	}
	if n == 0 {
		return errNoSagas
	}
	switch {
	case o.path != "":
		if err := os.WriteFile(o.path, buf.Bytes(), 0o644); err != nil {
			return fmt.Errorf("outcome log: %w", err)
		}
	case asJSON:
		if _, err := stdout.Write(buf.Bytes()); err != nil {
			return fmt.Errorf("outcome log: %w", err)
		}
	default:
		if err := printOutcomes(stdout, buf.Bytes()); err != nil {
			return err
		}
	}
	printf(stderr, "%s, outcome log SHA-256: %s\n", count(n, "saga"), digest)
	return nil
}

// printOutcomes prints the outcome log log as a table, a row per saga.
func printOutcomes(w io.Writer, log []byte) error {
	t := table(w)
	fmt.Fprintln(t, "SAGA_ID\tTYPE\tRANK\tSTATUS\tSTART\tEND\tCOMPLETED\tREASON")
	sc := bufio.NewScanner(bytes.NewReader(log))
	sc.Buffer(nil, len(log)+1)
	for sc.Scan() {
		var l saga.OutcomeLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			return fmt.Errorf("outcome log: %w", err)
		}
		printf(t, "%s\t%s\t%d\t%s\t%d\t%d\t%s\t%s\n", l.ID, l.Saga, l.Rank, l.Status, l.StartTick, l.EndTick,
			orDash(strings.Join(l.Completed, ",")), orDash(clip(l.Reason, 60)))
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("outcome log: %w", err)
	}
	return t.Flush()
}

// checkWritable returns an error, the system's, when path cannot be
// written: its directory is missing or closed to this user, or it is a
// directory or a file this user may not write. It leaves path as it found
// it: a file it creates to know is removed, one that is there is opened
// without being truncated, and a device or a pipe is not opened at all
// (a pipe's reader would see its end).
func checkWritable(path string) error {
	fi, err := os.Stat(path)
	var f *os.File
	created := false
	switch {
	case err == nil && fi.IsDir():
		return errors.New("is a directory")
	case err == nil && !fi.Mode().IsRegular():
		return nil
	case err == nil:
		f, err = os.OpenFile(path, os.O_WRONLY, 0)
	case errors.Is(err, fs.ErrNotExist):
		f, err = os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		created = err == nil
	}
	if err != nil {
		if pe := (*fs.PathError)(nil); errors.As(err, &pe) {
			return pe.Err // the caller says the path
		}
		return err
	}
	err = f.Close()
	if created {
		err = errors.Join(err, os.Remove(path))
	}
	return err
}
