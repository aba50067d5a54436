package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
)

// Serve runs a long-lived program named process: it makes the logger at
// level (tagged with the process and its pid), runs run until SIGINT or
// SIGTERM cancels its context, and returns the exit code: 0 after a clean
// stop, 1 when run failed, 2 for a bad level.
func Serve(stderr io.Writer, process, level string, run func(ctx context.Context, log *slog.Logger) error) int {
	return ServeObserved(stderr, process, Observe{LogLevel: level}, run)
}

// UsageCode returns the exit code for an error from parsing flags: 0 for
// -h, 2 otherwise, after printing the error.
func UsageCode(err error, stderr io.Writer) int {
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	fmt.Fprintln(stderr, err)
	return 2
}
