//go:build !linux

package testenv

import "syscall"

// dieWithParent does nothing where the kernel offers no parent-death signal; the node network still exits when
// its stdin closes, but postgres and tap may outlive a crashed test.
func dieWithParent(*syscall.SysProcAttr) {}
