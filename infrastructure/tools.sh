#!/usr/bin/env bash
# Lints the AWS templates with both AWS linters.
#
# aws-sam-cli pins boto3 exactly, so it cannot share the project's venv: it lives in its own venv under
# .tools/sam, created on first use (idempotent; delete .tools/sam to rebuild). cfn-lint comes from the
# project's dev extra. No AWS account is contacted: `sam validate --lint` reads the template locally, and
# the region and credentials below only satisfy boto3's start-up checks.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

SAM_VENV="$ROOT/.tools/sam"
PYTHON="${PYTHON:-python3}"
CFN_LINT="${CFN_LINT:-$ROOT/.venv/bin/cfn-lint}"
if [[ ! -x "$CFN_LINT" ]]; then
  CFN_LINT="$(command -v cfn-lint)"
fi

if [[ ! -x "$SAM_VENV/bin/sam" ]]; then
  echo "tools.sh: installing aws-sam-cli into $SAM_VENV"
  "$PYTHON" -m venv "$SAM_VENV"
  "$SAM_VENV/bin/pip" install --quiet --disable-pip-version-check "aws-sam-cli>=1.120,<2" \
    || { rm -rf "$SAM_VENV"; echo "tools.sh: installing aws-sam-cli failed" >&2; exit 1; }
fi

export SAM_CLI_TELEMETRY=0
# These checks are local only: dummy region and credentials, never the developer's own profile.
export AWS_DEFAULT_REGION=us-east-1
export AWS_REGION=us-east-1
export AWS_ACCESS_KEY_ID=testing
export AWS_SECRET_ACCESS_KEY=testing
unset AWS_SESSION_TOKEN AWS_PROFILE
export AWS_CONFIG_FILE=/dev/null
export AWS_SHARED_CREDENTIALS_FILE=/dev/null

echo "tools.sh: sam validate --lint --template template.yaml"
"$SAM_VENV/bin/sam" validate --lint --template template.yaml --region "$AWS_DEFAULT_REGION"

shopt -s nullglob
templates=(template.yaml infrastructure/*.yaml)
echo "tools.sh: cfn-lint ${templates[*]}"
"$CFN_LINT" "${templates[@]}"

echo "tools.sh: templates pass"
