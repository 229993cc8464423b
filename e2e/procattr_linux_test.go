package e2e

import "syscall"

// dieWithParent makes the kernel kill atkafka when the test process dies, so a crashed or timed-out test run
// leaves no producers behind on a shared machine.
func dieWithParent(attr *syscall.SysProcAttr) { attr.Pdeathsig = syscall.SIGKILL }
