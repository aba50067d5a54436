package bench

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"time"
)

// clockTick is the unit of the CPU times in /proc/<pid>/stat (USER_HZ),
// 100 per second on every Linux platform Go supports.
const clockTick = 10 * time.Millisecond

// ProcessCPU returns the user plus system CPU time the process pid has used
// so far, all its threads included, read from /proc/<pid>/stat (Linux only,
// 10 ms resolution). It returns an error when the file cannot be read or
// parsed.
func ProcessCPU(pid int) (time.Duration, error) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, fmt.Errorf("cpu of %d: %w", pid, err)
	}
	return parseStat(data)
}

// parseStat reads utime and stime, fields 14 and 15 of a /proc/<pid>/stat
// line. The command name, field 2, is in parentheses and may hold spaces,
// so the fields are counted from the last ')'.
func parseStat(data []byte) (time.Duration, error) {
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return 0, fmt.Errorf("cpu: malformed stat %q", data)
	}
	fields := bytes.Fields(data[i+1:])
	// fields[0] is field 3 (state); utime is field 14, stime field 15.
	if len(fields) < 13 {
		return 0, fmt.Errorf("cpu: malformed stat %q", data)
	}
	var total int64
	for _, f := range fields[11:13] {
		v, err := strconv.ParseInt(string(f), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("cpu: malformed stat: %w", err)
		}
		total += v
	}
	return time.Duration(total) * clockTick, nil
}
