package deploy

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/tractstack/concierge/builder"
)

// runChild is the default RunFunc: builder.Run (own process group,
// explicit environment, the group killed on timeout or cancel).
func runChild(ctx context.Context, dir, name string, args, env []string, timeout time.Duration, out io.Writer) error {
	return builder.Run(ctx, builder.Command{Dir: dir, Name: name, Args: args, Env: env, Timeout: timeout, Output: out})
}

// RestartBackend restarts the target's systemd unit, whose backend
// listens on port (0: unknown), bounding the old process's stop (see
// stop.go), and reports how that stop went. When systemd refuses
// because the unit hit its start rate limit (a deploy restarts on purpose,
// and a rollback restarts twice within seconds), it clears the unit's
// failed state with reset-failed and restarts once more.
func (d *Deployer) RestartBackend(ctx context.Context, p Paths, port int, out io.Writer) (Stop, error) {
	if out == nil {
		out = io.Discard
	}
	stop, err := d.restartWatched(ctx, p.Unit, port, out)
	if err != nil && StartLimited(err.Error()) {
		d.cfg.Log.Warn().Str("unit", p.Unit).Msg("start rate limit hit; reset-failed and restart again")
		if rerr := d.systemctl(ctx, out, "reset-failed", p.Unit); rerr == nil {
			err = d.systemctl(ctx, out, "restart", p.Unit)
		}
	}
	if err != nil {
		return stop, fmt.Errorf("restart %s: %w", p.Unit, err)
	}
	return stop, nil
}

// systemctl runs the systemctl prefix with args; the error carries the
// tail of the child's output.
func (d *Deployer) systemctl(ctx context.Context, out io.Writer, args ...string) error {
	full := append(append([]string{}, d.cfg.Systemctl[1:]...), args...)
	cmd := append([]string{d.cfg.Systemctl[0]}, full...)
	d.cfg.Log.Info().Strs("cmd", cmd).Msg(strings.Join(cmd, " "))
	var buf tail
	err := d.cfg.Run(ctx, "", d.cfg.Systemctl[0], full, d.cfg.Env, d.cfg.StepTimeout, io.MultiWriter(out, &buf))
	if err != nil {
		if msg := strings.TrimSpace(buf.String()); msg != "" {
			return fmt.Errorf("%w: %s", err, msg)
		}
		return err
	}
	return nil
}

// StartLimited reports whether systemctl's complaint is the start rate
// limit ("start of the service was attempted too often").
func StartLimited(msg string) bool {
	return strings.Contains(msg, "attempted too often") || strings.Contains(msg, "start-limit")
}

// tail keeps the last 2 KiB written to it.
type tail struct{ b []byte }

func (t *tail) Write(p []byte) (int, error) {
	t.b = append(t.b, p...)
	if len(t.b) > 2048 {
		t.b = t.b[len(t.b)-2048:]
	}
	return len(p), nil
}

func (t *tail) String() string { return string(t.b) }

// ReloadFrontend reloads the target's pm2 process. pm2 guards a reload
// with a lock file in PM2_HOME that its CLI removes when the reload ends;
// a CLI that died mid-reload (a concierge killed with SIGKILL closes the
// CLI's output pipe, and the CLI dies on its next write) leaves the lock,
// and pm2 then refuses every reload for 30 seconds. Concierge is the only
// one reloading (it holds the run lock), so such a lock is stale: the
// reload is run again with --force. The Stop reports how long the old
// process (by the pid pm2 recorded for it) took to go.
func (d *Deployer) ReloadFrontend(ctx context.Context, p Paths, out io.Writer) (stop Stop, err error) {
	if out == nil {
		out = io.Discard
	}
	// Which mode pm2 runs the process in decides whether the reload has a
	// gap; asked meanwhile, so that the reload does not wait for it. Only
	// when pm2's daemon is up: each pm2 command that finds none starts
	// one, so two at once would start two, and the one that loses the
	// socket is left running where no `pm2 kill` reaches it. Without a
	// daemon, the mode is asked after the reload has started it.
	var mode chan string
	if pm2DaemonUp(pm2Home(d.cfg.Env)) {
		mode = make(chan string, 1)
		go func() { mode <- d.execMode(ctx, p.Process) }()
	}
	defer func() {
		var m string
		if mode != nil {
			m = <-mode
		} else {
			m = d.execMode(ctx, p.Process)
		}
		msg := ReloadNote(p.Process, m)
		fmt.Fprintln(out, msg)
		d.cfg.Log.Info().Str("process", p.Process).Str("exec_mode", m).Msg(msg)
	}()
	if pids := pm2PIDs(pm2Home(d.cfg.Env), p.Process); len(pids) > 0 {
		done, took := make(chan struct{}), make(chan time.Duration, 1)
		go func(start time.Time) { took <- watchGone(pids, start, done) }(time.Now())
		defer func() { close(done); stop = Stop{Measured: true, Took: <-took} }()
	}
	args := append(append([]string{}, d.cfg.PM2[1:]...), "reload", p.Process)
	d.cfg.Log.Info().Str("process", p.Process).Strs("cmd", append([]string{d.cfg.PM2[0]}, args...)).
		Msgf("reload frontend: %s", strings.Join(append([]string{d.cfg.PM2[0]}, args...), " "))
	var buf tail
	err = d.cfg.Run(ctx, "", d.cfg.PM2[0], args, d.cfg.Env, d.cfg.StepTimeout, io.MultiWriter(out, &buf))
	if err != nil && ReloadLocked(buf.String()) {
		args = append(args, "--force")
		d.cfg.Log.Warn().Str("process", p.Process).Strs("cmd", append([]string{d.cfg.PM2[0]}, args...)).
			Msg("pm2 reload lock left by an interrupted reload; reloading with --force")
		err = d.cfg.Run(ctx, "", d.cfg.PM2[0], args, d.cfg.Env, d.cfg.StepTimeout, out)
	}
	if err != nil {
		return stop, fmt.Errorf("reload %s: %w", p.Process, err)
	}
	return stop, nil
}

// ReloadLocked reports whether pm2's output says a reload was refused
// because another one holds its reload lock.
func ReloadLocked(msg string) bool {
	return strings.Contains(msg, "Reload already in progress")
}

// execMode asks pm2 (jlist) how it runs process: "fork_mode",
// "cluster_mode", or "" when it cannot tell.
func (d *Deployer) execMode(ctx context.Context, process string) string {
	var buf strings.Builder
	args := append(append([]string{}, d.cfg.PM2[1:]...), "jlist")
	if err := d.cfg.Run(ctx, "", d.cfg.PM2[0], args, d.cfg.Env, d.cfg.StepTimeout, &buf); err != nil {
		return ""
	}
	return ExecMode(buf.String(), process)
}

// ExecMode finds, in the output of `pm2 jlist`, the exec mode of the
// process named name ("fork_mode" or "cluster_mode"); "" when it is not
// there. pm2 may print other lines before the JSON array. Pure.
func ExecMode(jlist, name string) string {
	i := strings.Index(jlist, "[")
	if i < 0 {
		return ""
	}
	var procs []struct {
		Name string `json:"name"`
		Env  struct {
			ExecMode string `json:"exec_mode"`
		} `json:"pm2_env"`
	}
	if err := json.NewDecoder(strings.NewReader(jlist[i:])).Decode(&procs); err != nil {
		return ""
	}
	for _, p := range procs {
		if p.Name == name {
			return p.Env.ExecMode
		}
	}
	return ""
}

// ReloadNote says, for the job's log, what a reload of process in pm2
// mode means for visitors. Pure.
func ReloadNote(process, mode string) string {
	switch mode {
	case "cluster_mode":
		return fmt.Sprintf("pm2 runs %s in cluster mode: the reload starts the new server before it stops the old one, with no gap", process)
	case "fork_mode":
		return fmt.Sprintf("pm2 runs %s in fork mode: the reload restarts the server, so it refuses connections for a moment; "+
			"run it in cluster mode (exec_mode cluster, instances 1) for a reload without a gap (README: zero-gap frontend reloads)", process)
	default:
		return fmt.Sprintf("pm2 mode of %s unknown (pm2 jlist did not list it)", process)
	}
}
