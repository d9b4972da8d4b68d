package builder

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"

	"github.com/go-git/go-git/v5/plumbing/transport"
	gitssh "github.com/go-git/go-git/v5/plumbing/transport/ssh"
	"github.com/skeema/knownhosts"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
)

// authKind is how a remote is authenticated to.
type authKind int

const (
	// authNone: local paths, file://, http(s) and git:// remotes (public).
	authNone authKind = iota
	// authSSHAgent: an ssh remote and SSH_AUTH_SOCK set in the child env.
	authSSHAgent
	// authSSHKeys: an ssh remote and the user's key files under HOME.
	authSSHKeys
)

func (k authKind) String() string {
	switch k {
	case authSSHAgent:
		return "ssh-agent"
	case authSSHKeys:
		return "ssh-keys"
	default:
		return "none"
	}
}

// authKindFor decides, as the git CLI would, how to authenticate to the
// remote at url: ssh remotes (ssh://, scp-like user@host:path) through the
// agent when there is one, else the user's keys; anything else without
// credentials.
func authKindFor(url string, hasAgent bool) (authKind, error) {
	ep, err := transport.NewEndpoint(url)
	if err != nil {
		return authNone, fmt.Errorf("parse remote url %q: %w", url, err)
	}
	if ep.Protocol != "ssh" {
		return authNone, nil
	}
	if hasAgent {
		return authSSHAgent, nil
	}
	return authSSHKeys, nil
}

// authFor builds the go-git auth method for url from the child
// environment env. The returned close function releases an agent
// connection; it is never nil.
func authFor(url string, env []string) (transport.AuthMethod, func(), error) {
	noop := func() {}
	sock := getenv(env, "SSH_AUTH_SOCK")
	kind, err := authKindFor(url, sock != "")
	if err != nil || kind == authNone {
		return nil, noop, err
	}
	ep, err := transport.NewEndpoint(url)
	if err != nil {
		return nil, noop, fmt.Errorf("parse remote url %q: %w", url, err)
	}
	user := ep.User
	if user == "" {
		user = getenv(env, "USER")
	}
	if user == "" {
		user = "git"
	}
	home := getenv(env, "HOME")
	if home == "" {
		return nil, noop, errors.New("no HOME in the environment to find ~/.ssh")
	}
	knownHostsFile := filepath.Join(home, ".ssh", "known_hosts")
	db, err := knownhosts.NewDB(knownHostsFile)
	if err != nil {
		return nil, noop, fmt.Errorf("read %s (needed to check the host key of %s): %w", knownHostsFile, ep.Host, err)
	}
	port := ep.Port
	if port == 0 {
		port = 22
	}
	hostWithPort := net.JoinHostPort(ep.Host, strconv.Itoa(port))
	check := db.HostKeyCallback()
	helper := gitssh.HostKeyCallbackHelper{
		HostKeyCallback: func(hostname string, remote net.Addr, key ssh.PublicKey) error {
			err := check(hostname, remote, key)
			switch {
			case err == nil:
				return nil
			case knownhosts.IsHostUnknown(err):
				return fmt.Errorf("host %s is not in %s; run `ssh -T %s@%s` once as this user to check and accept its key, then retry", ep.Host, knownHostsFile, user, ep.Host)
			case knownhosts.IsHostKeyChanged(err):
				return fmt.Errorf("host key of %s does not match %s (changed host key or an attack); check it, fix known_hosts, then retry: %w", ep.Host, knownHostsFile, err)
			default:
				return err
			}
		},
		HostKeyAlgorithms: db.HostKeyAlgorithms(hostWithPort),
	}

	if kind == authSSHAgent {
		conn, err := net.Dial("unix", sock)
		if err != nil {
			return nil, noop, fmt.Errorf("connect to ssh agent at SSH_AUTH_SOCK=%s: %w", sock, err)
		}
		client := agent.NewClient(conn)
		return &gitssh.PublicKeysCallback{User: user, Callback: client.Signers, HostKeyCallbackHelper: helper},
			func() { conn.Close() }, nil
	}

	var signers []ssh.Signer
	var tried []string
	// The user's keys, in ssh's order of preference.
	for _, name := range []string{"id_ed25519", "id_ecdsa", "id_rsa"} {
		p := filepath.Join(home, ".ssh", name)
		pem, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		s, err := ssh.ParsePrivateKey(pem)
		if err != nil {
			// A passphrase-protected key needs the agent.
			tried = append(tried, fmt.Sprintf("%s (%v)", p, err))
			continue
		}
		signers = append(signers, s)
	}
	if len(signers) == 0 {
		msg := fmt.Sprintf("no usable ssh key for %s: none of %s/.ssh/{id_ed25519,id_ecdsa,id_rsa} could be read without a passphrase and SSH_AUTH_SOCK is not set", url, home)
		if len(tried) > 0 {
			msg += fmt.Sprintf("; tried %v", tried)
		}
		return nil, noop, errors.New(msg)
	}
	return &gitssh.PublicKeysCallback{
		User:                  user,
		Callback:              func() ([]ssh.Signer, error) { return signers, nil },
		HostKeyCallbackHelper: helper,
	}, noop, nil
}
