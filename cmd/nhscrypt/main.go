// Command nhscrypt is the command-line interface of the nhscrypt toolkit.
// Everything it does is in the library packages; see internal/cli.
package main

import (
	"os"

	"github.com/nhscrypt/nhscrypt/internal/cli"
)

func main() { os.Exit(cli.Main()) }
