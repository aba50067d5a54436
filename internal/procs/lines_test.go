package procs_test

import (
	"bytes"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/internal/procs"
)

// TestLinesKeepsLinesWhole has eight writers write lines at once, each
// line in pieces cut anywhere: the output holds every line whole, each
// writer's in its order, and a last line with no newline is held back.
func TestLinesKeepsLinesWhole(t *testing.T) {
	var out bytes.Buffer
	lines := procs.NewLines(&out)
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lw := lines.Writer()
			var text strings.Builder
			for i := range 200 {
				fmt.Fprintf(&text, "writer %d line %d %s\n", w, i, strings.Repeat("x", i%37))
			}
			text.WriteString("unfinished")
			data := []byte(text.String())
			for len(data) > 0 {
				n := min(len(data), 1+len(data)%13)
				_, err := lw.Write(data[:n])
				require.NoError(t, err)
				data = data[n:]
			}
		}()
	}
	wg.Wait()
	next := map[int]int{}
	for _, line := range strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n") {
		var w, i int
		var xs string
		_, err := fmt.Sscanf(line, "writer %d line %d %s", &w, &i, &xs)
		if i%37 == 0 {
			_, err = fmt.Sscanf(line, "writer %d line %d", &w, &i)
		}
		require.NoError(t, err, "a cut line: %q", line)
		require.Equal(t, next[w], i, "writer %d out of order", w)
		require.Equal(t, fmt.Sprintf("writer %d line %d %s", w, i, strings.Repeat("x", i%37)), line)
		next[w]++
	}
	for w := range 8 {
		require.Equal(t, 200, next[w], "writer %d", w)
	}
	require.NotContains(t, out.String(), "unfinished")
}

// TestLastLine: a program's last whole line is kept, cut to MaxLastLine
// bytes, whether or not its output goes anywhere else; a last line
// without its newline is not whole.
func TestLastLine(t *testing.T) {
	long := strings.Repeat("x", procs.MaxLastLine+100)
	var out bytes.Buffer
	for _, tc := range []struct {
		script string
		out    io.Writer
		want   string
	}{
		{"echo first; echo 'stopped err=\"no such file\"'; printf 'cut off'; exit 3", nil, `stopped err="no such file"`},
		{"echo first; echo 'why'; exit 3", &out, "why"},
		{"echo " + long + "; exit 3", nil, long[:procs.MaxLastLine]},
		{"exit 3", nil, ""},
	} {
		p, err := procs.Start("sh", "/bin/sh", []string{"-c", tc.script}, nil, tc.out)
		require.NoError(t, err)
		<-p.Done()
		require.EqualError(t, p.Err(), "exit status 3")
		require.Equal(t, tc.want, p.LastLine(), tc.script)
	}
	require.Equal(t, "first\nwhy\n", out.String(), "the output still goes where it was sent")
}
