/** This machine's architecture as OCI images name it (Go's GOARCH): amd64, arm64, … */
export function imageArchitecture(): string {
  return process.arch === 'x64' ? 'amd64' : process.arch;
}
