package testenv

import "syscall"

// dieWithParent makes the kernel send SIGKILL to the child when the test process dies (even by SIGKILL), the
// only way a crashed test cannot leave servers running. SIGKILL because a dying test cannot wait for a graceful
// exit anyway, and postgres backends notice their postmaster is gone and exit on their own.
func dieWithParent(attr *syscall.SysProcAttr) { attr.Pdeathsig = syscall.SIGKILL }
