package etcdtest

import (
	"context"
	"strings"
	"testing"
	"time"
)

func TestStartStopStart(t *testing.T) {
	s := Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c := s.Client(t)
	if _, err := c.Put(ctx, "/k", "v"); err != nil {
		t.Fatal(err)
	}
	s.Stop()
	if s.Running() {
		t.Fatal("running after Stop")
	}
	s.Start()
	resp, err := c.Get(ctx, "/k")
	if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "v" {
		t.Fatalf("after restart: %v %v", resp, err)
	}
	if !strings.HasPrefix(s.URL(), "etcd://127.0.0.1:") {
		t.Errorf("URL() = %s", s.URL())
	}
}

func TestTLS(t *testing.T) {
	s := StartTLS(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := s.Client(t).Put(ctx, "/k", "v"); err != nil {
		t.Fatal(err)
	}
	if s.TLS() == nil || !strings.Contains(s.URL(), "?ca=") {
		t.Fatalf("URL() = %s", s.URL())
	}
}
