package pktsock

import (
	"unsafe"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// rawPtr gives the kernel the assembled filter: bpf.RawInstruction and
// unix.SockFilter have the same layout (struct sock_filter).
func rawPtr(raw []bpf.RawInstruction) unsafe.Pointer {
	var _ [unsafe.Sizeof(bpf.RawInstruction{}) - unsafe.Sizeof(unix.SockFilter{})]struct{}
	return unsafe.Pointer(&raw[0])
}
