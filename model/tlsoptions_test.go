package model

import (
	"strings"
	"testing"
)

func TestTLSOptions(t *testing.T) {
	dir := t.TempDir()
	if o, err := TLSOptions("file://"+dir, "", "", ""); err != nil || o != nil {
		t.Errorf("no TLS: %v %v", o, err)
	}
	if _, err := TLSOptions("file://"+dir, "/etc/hostname", "", ""); err == nil || !strings.Contains(err.Error(), "etcd://") {
		t.Errorf("TLS with a file datastore: %v", err)
	}
	if _, err := TLSOptions("etcd://127.0.0.1:2379", "", "/etc/hostname", ""); err == nil || !strings.Contains(err.Error(), "go together") {
		t.Errorf("cert without key: %v", err)
	}
	if _, err := TLSOptions("etcd://127.0.0.1:2379", dir+"/missing.pem", "", ""); err == nil || !strings.Contains(err.Error(), "--etcd-ca") {
		t.Errorf("missing CA: %v", err)
	}
	if o, err := TLSOptions("etcd://127.0.0.1:2379", "/etc/hostname", "", ""); err != nil || len(o) != 1 {
		t.Errorf("CA only: %v %v", o, err)
	}
}
