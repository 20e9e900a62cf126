// Headless Chromium for tests: Debian's `chromium` package driven by
// playwright-core (no browser download; `.ci/run` installs the package).
// Everything the page logs as an error, every uncaught exception and every
// failed request is collected, so a test can assert there were none.
import { mkdir } from 'node:fs/promises'
import { join } from 'node:path'
import { chromium, type Browser, type BrowserContextOptions, type Page } from 'playwright-core'
import type { Test } from 'tap'
import { REPO_ROOT } from './mirror.js'
import { requireTools } from './tools.js'

/** Debian's chromium (a wrapper script that execs /usr/lib/chromium/chromium). */
export const CHROMIUM = process.env['CHROMIUM'] ?? '/usr/bin/chromium'

/** Where tests write what a human may want to look at (screenshots); ignored by git. */
export const ARTIFACTS = join(REPO_ROOT, 'test', 'artifacts')

/** A launched browser, closed at teardown; undefined (skipped, or failed under REQUIRE_E2E=1) without chromium. */
export async function launchBrowser(t: Test): Promise<Browser | undefined> {
  if (!requireTools(t, CHROMIUM)) return undefined
  // --no-sandbox: tests run as root, where Chromium's sandbox refuses to start.
  const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox'], timeout: 30_000 })
  t.teardown(() => browser.close().catch(() => undefined))
  return browser
}

export interface OpenedPage {
  readonly page: Page
  /** Console errors, uncaught exceptions, failed requests and HTTP errors, in order. */
  readonly problems: string[]
}

/** A new page in its own context (credentials, viewport), watched for problems, at `url`. */
export async function openPage(t: Test, browser: Browser, url: string, context: BrowserContextOptions = {}): Promise<OpenedPage> {
  const ctx = await browser.newContext({ viewport: { width: 1360, height: 900 }, ...context })
  t.teardown(() => ctx.close().catch(() => undefined))
  const page = await ctx.newPage()
  const problems: string[] = []
  page.on('console', (m) => {
    if (m.type() === 'error') problems.push(`console: ${m.text()}`)
  })
  page.on('pageerror', (err) => problems.push(`uncaught: ${err.message}`))
  page.on('requestfailed', (r) => problems.push(`request failed: ${r.url()} ${r.failure()?.errorText ?? ''}`))
  page.on('response', (r) => {
    if (r.status() >= 400) problems.push(`HTTP ${r.status()}: ${r.url()}`)
  })
  const response = await page.goto(url, { waitUntil: 'load' })
  if (response === null || !response.ok()) problems.push(`navigation: HTTP ${response?.status() ?? 'none'} for ${url}`)
  return { page, problems }
}

/** A full-page screenshot at test/artifacts/<name>.png; returns its path. */
export async function screenshot(page: Page, name: string): Promise<string> {
  await mkdir(ARTIFACTS, { recursive: true })
  const path = join(ARTIFACTS, `${name}.png`)
  await page.screenshot({ path, fullPage: true })
  return path
}
