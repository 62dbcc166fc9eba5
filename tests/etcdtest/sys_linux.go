package etcdtest

import "syscall"

// sysProcAttr has the kernel kill etcd if the test binary dies without
// running its cleanups (a timeout panic, SIGKILL).
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
