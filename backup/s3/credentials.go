package s3

import (
	"net/http"
	"os"
	"time"

	"github.com/minio/minio-go/v7/pkg/credentials"
)

// DefaultCredentials returns the credentials every S3 tool uses, looked up
// when the first request is signed, the first that has any of:
//
//   - the environment: AWS_ACCESS_KEY_ID (or AWS_ACCESS_KEY),
//     AWS_SECRET_ACCESS_KEY (or AWS_SECRET_KEY) and AWS_SESSION_TOKEN;
//   - the shared files ~/.aws/config and ~/.aws/credentials (or
//     AWS_CONFIG_FILE, AWS_SHARED_CREDENTIALS_FILE), profile AWS_PROFILE
//     or "default";
//   - a role: the ECS/EKS container endpoint (AWS_CONTAINER_CREDENTIALS_*),
//     web identity (AWS_WEB_IDENTITY_TOKEN_FILE, AWS_ROLE_ARN), or the EC2
//     instance profile from the metadata service (IMDSv2).
//
// Unlike the rest of this package it reads the environment and the home
// folder, which is for the command line to decide: library callers pass
// their own Options.Credentials.
func DefaultCredentials() *credentials.Credentials {
	return credentials.NewChainCredentials([]credentials.Provider{
		&credentials.EnvAWS{},
		&credentials.FileAWSCredentials{},
		&credentials.IAM{Client: &http.Client{Timeout: 10 * time.Second, Transport: http.DefaultTransport}},
	})
}

// DefaultRegion is AWS_REGION, else AWS_DEFAULT_REGION, else "" (ask the
// server). Like DefaultCredentials it reads the environment, for the
// command line.
func DefaultRegion() string {
	if r := os.Getenv("AWS_REGION"); r != "" {
		return r
	}
	return os.Getenv("AWS_DEFAULT_REGION")
}
