//go:build !linux

package e2e

import "syscall"

// dieWithParent does nothing where the kernel offers no parent-death signal; the test's cleanups stop atkafka.
func dieWithParent(*syscall.SysProcAttr) {}
