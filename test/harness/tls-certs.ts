// A private CA and server certificates for 127.0.0.1, made with openssl, as
// cert-manager would issue them for the Service's clusterIP.
import { join } from 'node:path'
import { mkdir, writeFile } from 'node:fs/promises'
import { runOk } from './tools.js'

export interface CertificateAuthority {
  readonly certPath: string
  readonly keyPath: string
}

export interface ServerCertificate {
  readonly certPath: string
  readonly keyPath: string
}

export async function makeCa(dir: string, name: string): Promise<CertificateAuthority> {
  await mkdir(dir, { recursive: true })
  const certPath = join(dir, 'ca.crt')
  const keyPath = join(dir, 'ca.key')
  await runOk('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '2', '-subj', `/CN=${name}`,
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign', '-keyout', keyPath, '-out', certPath], { timeoutMs: 30_000 })
  return { certPath, keyPath }
}

/** A certificate for 127.0.0.1 (IP SAN; or `subjectAltName`, e.g. 'DNS:stevedore.stevedore.svc') signed by ca, written as dir/tls.crt and dir/tls.key. */
export async function makeServerCert(dir: string, ca: CertificateAuthority, subjectAltName = 'IP:127.0.0.1'): Promise<ServerCertificate> {
  await mkdir(dir, { recursive: true })
  const keyPath = join(dir, 'tls.key')
  const csrPath = join(dir, 'tls.csr')
  const certPath = join(dir, 'tls.crt')
  const extPath = join(dir, 'ext.cnf')
  await writeFile(extPath, `subjectAltName=${subjectAltName}\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n`)
  await runOk('openssl', ['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-subj', '/CN=stevedore', '-keyout', keyPath, '-out', csrPath], { timeoutMs: 30_000 })
  await runOk('openssl', ['x509', '-req', '-in', csrPath, '-CA', ca.certPath, '-CAkey', ca.keyPath, '-CAcreateserial', '-days', '2', '-extfile', extPath, '-out', certPath], { timeoutMs: 30_000 })
  return { certPath, keyPath }
}
