package bench

import (
	"bufio"
	"bytes"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// CPUTime is this process's user and system CPU time so far (getrusage): the load generator and the embedded
// broker run in another process, so this is atkafka's own.
func CPUTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// PeakRSS is this process's peak resident set size (VmHWM) in bytes, 0 when /proc is unavailable.
func PeakRSS() int64 { return procStatusKB("self", "VmHWM") * 1024 }

// ProcessPeakRSS is another process's peak resident set size in bytes, 0 when /proc is unavailable.
func ProcessPeakRSS(pid int) int64 { return procStatusKB(strconv.Itoa(pid), "VmHWM") * 1024 }

func procStatusKB(pid, field string) int64 {
	f, err := os.Open("/proc/" + pid + "/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return n
		}
	}
	return 0
}

// ResetPeakRSS resets VmHWM to the current RSS (Linux: writing 5 to clear_refs), so that each phase of a run
// reports its own peak. It reports whether that worked.
func ResetPeakRSS() bool {
	return os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) == nil
}

// ProcessCPU is the user and system CPU time of another process so far, from /proc/<pid>/stat.
func ProcessCPU(pid int) time.Duration {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	// Fields after the command name, which is in parentheses and may contain spaces.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64) // utime is field 14 overall, 12th after the name
	st, _ := strconv.ParseInt(f[12], 10, 64)
	const ticks = 100 // USER_HZ on Linux
	return time.Duration(ut+st) * time.Second / ticks
}
