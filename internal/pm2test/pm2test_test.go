package pm2test

import (
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestParseJList(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    []Process
		wantErr bool
	}{
		{name: "empty", in: "[]", want: []Process{}},
		{name: "one", in: `[{"name":"astro-main","pid":42,"pm2_env":{"status":"online","restart_time":2}}]`,
			want: []Process{{Name: "astro-main", PID: 42, Status: "online", RestartTime: 2}}},
		{name: "notice first", in: "[PM2] Spawning PM2 daemon\n[{\"name\":\"a\",\"pid\":1,\"pm2_env\":{\"status\":\"stopped\"}}]",
			want: []Process{{Name: "a", PID: 1, Status: "stopped"}}},
		{name: "garbage", in: "oops", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseJList([]byte(tc.in))
			if tc.wantErr {
				if err == nil {
					t.Fatalf("got %v, want error", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Fatalf("got %v, want %v", got, tc.want)
				}
			}
		})
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func TestStartAppAndReload(t *testing.T) {
	p := Start(t)
	dir := t.TempDir()
	script := filepath.Join(dir, "server.mjs")
	if err := os.WriteFile(script, []byte(`import http from "node:http";
http.createServer((q, s) => s.end("pid " + process.pid)).listen(parseInt(process.env.PORT), "127.0.0.1");
`), 0o644); err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	p.StartApp("astro-test", script, port)
	body := waitBody(t, port, "")
	before, ok := p.Get("astro-test")
	if !ok || before.Status != "online" || before.PID == 0 {
		t.Fatalf("process %+v, %t", before, ok)
	}
	if !strings.Contains(body, strconv.Itoa(before.PID)) {
		t.Fatalf("body %q does not name pid %d", body, before.PID)
	}
	p.Run("reload", "astro-test")
	after, _ := p.Get("astro-test")
	if after.PID == before.PID || after.RestartTime <= before.RestartTime {
		t.Fatalf("reload: before %+v, after %+v", before, after)
	}
	waitBody(t, port, "pid "+strconv.Itoa(after.PID))
}

func waitBody(t *testing.T, port int, want string) string {
	t.Helper()
	c := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(20 * time.Second)
	var last string
	for time.Now().Before(deadline) {
		resp, err := c.Get("http://127.0.0.1:" + strconv.Itoa(port) + "/")
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			last = string(b)
			if strings.Contains(last, want) {
				return last
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("port %d never answered %q (last %q)", port, want, last)
	return ""
}
