package builder

import (
	"strings"
	"testing"
)

func TestAuthKindFor(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		url      string
		hasAgent bool
		want     authKind
	}{
		{name: "absolute path", url: "/home/t8k/origins/tractstack-go.git", want: authNone},
		{name: "absolute path, agent present", url: "/srv/git/x.git", hasAgent: true, want: authNone},
		{name: "relative path", url: "../origin.git", want: authNone},
		{name: "path with a colon after a slash", url: "./dir:with/colon", want: authNone},
		{name: "file url", url: "file:///srv/git/x.git", want: authNone},
		{name: "public https", url: "https://github.com/AtRiskMedia/tractstack-go.git", want: authNone},
		{name: "https with agent", url: "https://github.com/AtRiskMedia/tractstack-go.git", hasAgent: true, want: authNone},
		{name: "http", url: "http://git.local/x.git", want: authNone},
		{name: "git protocol", url: "git://git.local/x.git", want: authNone},
		{name: "scp-like with agent", url: "git@github.com:AtRiskMedia/tractstack-go.git", hasAgent: true, want: authSSHAgent},
		{name: "scp-like without agent", url: "git@github.com:AtRiskMedia/tractstack-go.git", want: authSSHKeys},
		{name: "scp-like without user", url: "github.com:org/repo.git", want: authSSHKeys},
		{name: "ssh url with agent", url: "ssh://git@github.com/org/repo.git", hasAgent: true, want: authSSHAgent},
		{name: "ssh url with port", url: "ssh://git@host:2222/org/repo.git", want: authSSHKeys},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := authKindFor(tt.url, tt.hasAgent)
			if err != nil || got != tt.want {
				t.Errorf("authKindFor(%q, %t) = %v, %v; want %v", tt.url, tt.hasAgent, got, err, tt.want)
			}
		})
	}
}

func TestAuthForSSHWithoutKeysOrKnownHosts(t *testing.T) {
	t.Parallel()
	home := t.TempDir()
	_, closeAuth, err := authFor("git@github.com:org/repo.git", []string{"HOME=" + home})
	closeAuth()
	if err == nil || !strings.Contains(err.Error(), "known_hosts") {
		t.Fatalf("authFor without known_hosts = %v, want an error naming known_hosts", err)
	}
	a, closeAuth, err := authFor("/srv/git/x.git", []string{"HOME=" + home})
	closeAuth()
	if a != nil || err != nil {
		t.Fatalf("authFor(local path) = %v, %v; want no auth", a, err)
	}
}
