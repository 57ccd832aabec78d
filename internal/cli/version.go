package cli

import (
	"encoding/json"
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/spf13/cobra"
)

// version is set at build time with -ldflags "-X …/internal/cli.version=v1.2.3";
// otherwise it comes from the module build information.
var version = ""

// Version returns nhscrypt's version: the module version, or the VCS
// revision of a development build.
func Version() string {
	if version != "" {
		return version
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	v := bi.Main.Version
	if v != "" && v != "(devel)" {
		return v
	}
	rev, dirty := "", false
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if rev == "" {
		return "(devel)"
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if dirty {
		rev += "-dirty"
	}
	return "(devel) " + rev
}

func newVersionCommand(g *globalOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print nhscrypt's version and the Go version it was built with",
		Args:  argsUsage(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, args []string) error {
			if g.JSON {
				return json.NewEncoder(g.stdout).Encode(struct {
					MessageType string `json:"message_type"`
					Version     string `json:"version"`
					GoVersion   string `json:"go_version"`
					Platform    string `json:"platform"`
				}{"version", Version(), runtime.Version(), runtime.GOOS + "/" + runtime.GOARCH})
			}
			_, err := fmt.Fprintf(g.stdout, "nhscrypt %s %s %s/%s\n", Version(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
			return err
		},
	}
}

func newCompletionCommand(g *globalOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "completion bash|zsh|fish",
		Short: "Print a shell completion script",
		Long: `Print a shell completion script. For example:

  nhscrypt completion bash > /etc/bash_completion.d/nhscrypt
  nhscrypt completion zsh > "${fpath[1]}/_nhscrypt"
  nhscrypt completion fish > ~/.config/fish/completions/nhscrypt.fish`,
		ValidArgs: []string{"bash", "zsh", "fish"},
		Args:      argsUsage(cobra.MatchAll(cobra.ExactArgs(1), cobra.OnlyValidArgs)),
		RunE: func(cmd *cobra.Command, args []string) error {
			root := cmd.Root()
			switch args[0] {
			case "bash":
				return root.GenBashCompletionV2(g.stdout, true)
			case "zsh":
				return root.GenZshCompletion(g.stdout)
			default:
				return root.GenFishCompletion(g.stdout, true)
			}
		},
	}
}
