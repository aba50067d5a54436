package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"time"
)

// Serve runs a long-lived program named process: it makes the logger at
// level (tagged with the process and its pid), runs run until SIGINT or
// SIGTERM cancels its context, and returns the exit code: 0 after a clean
// stop, 1 when run failed, 2 for a bad level.
func Serve(stderr io.Writer, process, level string, run func(ctx context.Context, log *slog.Logger) error) int {
	return ServeObserved(stderr, process, Observe{LogLevel: level}, run)
}

// UsageCode returns the exit code for an error from parsing flags: 0 for
// -h, 2 otherwise, after printing the error unless [Parse] says the flag
// package printed it.
func UsageCode(err error, stderr io.Writer) int {
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if !errors.Is(err, ErrPrinted) {
		fmt.Fprintln(stderr, err)
	}
	return 2
}

// UsageCodeFor is [UsageCode] for a program that takes -healthcheck,
// with the arguments it parsed: a health check whose command line is bad
// (an unknown flag, a bad log format) is a check that fails, exit 1, as a
// container's health check reads it, not 2, which Docker reserves.
func UsageCodeFor(args []string, err error, stderr io.Writer) int {
	code := UsageCode(err, stderr)
	if code == 2 && healthcheckAsked(args) {
		return 1
	}
	return code
}

// healthcheckAsked reports whether args, before any "--", set
// -healthcheck (or --healthcheck) to true.
func healthcheckAsked(args []string) bool {
	for _, a := range args {
		if a == "--" {
			return false
		}
		name, value, hasValue := strings.Cut(strings.TrimPrefix(strings.TrimPrefix(a, "-"), "-"), "=")
		if !strings.HasPrefix(a, "-") || name != "healthcheck" {
			continue
		}
		if !hasValue {
			return true
		}
		if on, err := strconv.ParseBool(value); err == nil && on {
			return true
		}
	}
	return false
}

// ErrPrinted is matched by the errors of [Parse] that the flag package
// printed already, above the usage.
var ErrPrinted = errors.New("printed by the flag package")

// Parse parses args into fs. An error of the flag package's own (a flag
// not defined, a bad value), which it printed with the usage to fs's
// output, comes back matching [ErrPrinted], so that it is not printed
// twice; -h comes back as flag.ErrHelp.
func Parse(fs *flag.FlagSet, args []string) error {
	err := fs.Parse(args)
	if err == nil || errors.Is(err, flag.ErrHelp) {
		return err
	}
	if name, ok := badDuration(fs, err); ok {
		fmt.Fprintf(fs.Output(), "-%s takes a duration with its unit, such as 5s, 250ms or 2m\n", name)
	}
	return printed{err}
}

// badDuration returns the name of the flag whose value err refuses, when
// that flag takes a duration: the flag package's "parse error" does not
// say what it wanted.
func badDuration(fs *flag.FlagSet, err error) (string, bool) {
	var value, name string
	if _, serr := fmt.Sscanf(err.Error(), "invalid value %q for flag -%s", &value, &name); serr != nil {
		return "", false
	}
	name = strings.TrimSuffix(name, ":")
	f := fs.Lookup(name)
	if f == nil {
		return "", false
	}
	g, ok := f.Value.(flag.Getter)
	if !ok {
		return "", false
	}
	_, ok = g.Get().(time.Duration)
	return name, ok
}

// printed is an error the flag package printed.
type printed struct{ error }

func (p printed) Unwrap() error        { return p.error }
func (p printed) Is(target error) bool { return target == ErrPrinted }
