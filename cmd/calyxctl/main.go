// Command calyxctl inspects and configures calyx.
package main

import (
	"context"
	"os"

	"github.com/calyxnet/calyx/ctl"
)

func main() {
	os.Exit(ctl.Run(context.Background(), os.Args[1:], ctl.IO{In: os.Stdin, Out: os.Stdout, Err: os.Stderr}))
}
