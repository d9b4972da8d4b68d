// Command concierge is the build concierge of a TractStack host: it turns
// trigger files in <home>/state into a durable, serialised job queue and,
// per job, pulls, builds, swaps in, restarts and health-checks the site.
package main

import (
	"context"
	"os"
)

func main() {
	app := &App{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr, Env: os.Environ()}
	os.Exit(app.Main(context.Background(), os.Args[1:]))
}
