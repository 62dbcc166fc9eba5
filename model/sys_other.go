//go:build !linux

package model

import "errors"

const haveSyncfs = false

func syncFilesystem(string) error { return errors.New("syncfs is not available on this platform") }
