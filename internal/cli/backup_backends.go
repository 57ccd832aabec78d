package cli

import (
	"context"
	"errors"
	"net/url"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/nhscrypt/nhscrypt/backup"
	"github.com/nhscrypt/nhscrypt/backup/local"
	"github.com/nhscrypt/nhscrypt/backup/retry"
	"github.com/nhscrypt/nhscrypt/backup/s3"
	"github.com/nhscrypt/nhscrypt/backup/sftp"
)

// backendOptions are the flags of the network backends.
type backendOptions struct {
	SSHIdentities []string
	KnownHosts    string
	AcceptNew     bool
	Connections   int
	S3Region      string
	StorageClass  string
	RetainUntil   string
	RetainDays    int
	LockMode      string
	Retries       int
}

func (o *backendOptions) addFlags(cmd *cobra.Command) {
	f := cmd.PersistentFlags()
	f.StringArrayVar(&o.SSHIdentities, "ssh-identity", nil, "sftp: log in with the SSH private key `FILE` (repeatable; default ~/.ssh/id_* and ssh-agent)")
	f.StringVar(&o.KnownHosts, "ssh-known-hosts", "", "sftp: the known_hosts `FILE` (default ~/.ssh/known_hosts)")
	f.BoolVar(&o.AcceptNew, "ssh-accept-new", false, "sftp: trust and record an unknown host key (never a changed one), as StrictHostKeyChecking=accept-new")
	f.IntVar(&o.Connections, "connections", 4, "sftp and s3: uploads in progress at once")
	f.StringVar(&o.S3Region, "region", "", "s3: the bucket's region (default $AWS_REGION or $AWS_DEFAULT_REGION, else asked)")
	f.StringVar(&o.StorageClass, "storage-class", "", "s3: storage class of new objects (STANDARD_IA, GLACIER_IR, …)")
	f.StringVar(&o.RetainUntil, "retain-until", "", "s3: object-lock every new object until `DATE` (2006-01-02 or RFC 3339)")
	f.IntVar(&o.RetainDays, "retain-days", 0, "s3: object-lock every new object for `N` days")
	f.StringVar(&o.LockMode, "retain-mode", "governance", "s3: object-lock mode of --retain-*: governance or compliance")
	f.IntVar(&o.Retries, "retries", 6, "sftp and s3: tries for an operation that fails transiently")
}

// creator is a backend that can lay out a new repository.
type creator interface{ Create(context.Context) error }

type localCreator struct{ *local.Backend }

func (l localCreator) Create(context.Context) error { return l.Backend.Create() }

// openBackend chooses the backend from the repository location: a folder
// or file:// URL, sftp://user@host[:port]/path, s3://host[:port]/bucket[/prefix]
// or s3+http://… for a plain-HTTP server. Network backends are wrapped in
// the retry decorator.
func openBackend(ctx context.Context, loc string, o *backendOptions) (backup.Backend, creator, error) {
	if loc == "" {
		return nil, nil, usagef("no repository: give --repo or set NHSCRYPT_REPO")
	}
	if strings.HasPrefix(loc, "file://") || !strings.Contains(loc, "://") {
		b := local.Open(strings.TrimPrefix(loc, "file://"))
		return b, localCreator{b}, nil
	}
	u, err := url.Parse(loc)
	if err != nil {
		return nil, nil, usagef("repository %q is not a valid URL: %v", loc, err)
	}
	var b backup.Backend
	var c creator
	switch u.Scheme {
	case "sftp":
		sb, err := sftp.Open(ctx, u, sftp.Options{KnownHostsFile: o.KnownHosts, AcceptNew: o.AcceptNew,
			IdentityFiles: o.SSHIdentities, Connections: o.Connections})
		if err != nil {
			return nil, nil, withSSHHint(err)
		}
		b, c = sb, sb
	case "s3", "s3+http":
		region := o.S3Region
		if region == "" {
			region = s3.DefaultRegion()
		}
		so := s3.Options{Credentials: s3.DefaultCredentials(), Region: region, StorageClass: o.StorageClass, Concurrency: o.Connections}
		if o.RetainUntil != "" || o.RetainDays > 0 {
			mode, err := s3.ParseRetentionMode(o.LockMode)
			if err != nil {
				return nil, nil, usagef("%v", err)
			}
			r := &s3.Retention{Mode: mode, Days: o.RetainDays}
			if o.RetainUntil != "" {
				t, err := time.Parse(time.RFC3339, o.RetainUntil)
				if err != nil {
					if t, err = time.Parse("2006-01-02", o.RetainUntil); err != nil {
						return nil, nil, usagef("--retain-until %q: want 2006-01-02 or RFC 3339", o.RetainUntil)
					}
				}
				r.Until = t
			}
			so.Retention = r
		}
		sb, err := s3.Open(ctx, u, so)
		if err != nil {
			if errors.Is(err, backup.ErrAuth) {
				return nil, nil, withHint(err, "check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE, and SSL_CERT_FILE for a private CA")
			}
			return nil, nil, err
		}
		b, c = sb, sb
	default:
		return nil, nil, usagef("unsupported repository location %q (a folder, file://, sftp://, s3:// or s3+http://)", loc)
	}
	rb := retry.New(b, o.Retries, 500*time.Millisecond, 30*time.Second)
	return rb, c, nil
}

func withSSHHint(err error) error {
	var hke *sftp.HostKeyError
	if errors.As(err, &hke) && !hke.Changed {
		return withHint(err, "check the host key fingerprint with the server's admin, then run once with --ssh-accept-new")
	}
	return err
}
