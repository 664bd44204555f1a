import assert from 'node:assert/strict'
import { existsSync } from 'node:fs'
import { mkdir, mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { chromium, type BrowserContext, type Page } from 'playwright-core'
import { randomFile, useCluster } from './helpers.ts'

/** Debian's chromium (.ci/run installs it); STOR_CHROMIUM names another. */
const CHROMIUM = process.env.STOR_CHROMIUM ?? '/usr/bin/chromium'
const FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync']

describe('the FAT\'s status page in a real browser (chromium, headless)', function () {
  const net = useCluster('status-page', {
    vendors: 3,
    devicesPerVendor: 1,
    deviceSize: '64MiB',
    fatArgs: ['--heartbeat', '500ms', '--http-listen', '127.0.0.1:0']
  }, ['alice'])
  let profile = ''
  let context: BrowserContext | undefined
  let page: Page
  const problems: string[] = []
  /** Screenshots land here, kept after the test for a person to look at. */
  const shots = join(tmpdir(), 'stor-status-page-shots')

  before(async function () {
    if (!existsSync(CHROMIUM)) {
      // CI installs chromium; a developer's machine without it is told how to get it
      if (process.env.CI != null) throw new Error(`${CHROMIUM} is missing: apt-get install chromium`)
      this.skip()
    }
    profile = await mkdtemp(join(tmpdir(), 'stor-chromium-'))
    await mkdir(shots, { recursive: true })
    // a fresh profile: playwright passes it as --user-data-dir
    context = await chromium.launchPersistentContext(profile, { executablePath: CHROMIUM, headless: true, args: FLAGS, viewport: { width: 1200, height: 900 } })
    page = context.pages()[0] ?? await context.newPage()
    page.on('console', msg => { if (msg.type() === 'error' || msg.type() === 'warning') problems.push(`console ${msg.type()}: ${msg.text()}`) })
    page.on('pageerror', err => { problems.push(`page error: ${err.message}`) })
    page.on('requestfailed', req => { problems.push(`request failed: ${req.url()} ${req.failure()?.errorText ?? ''}`) })
    page.on('response', res => { if (res.status() >= 400) problems.push(`${res.status()} for ${res.url()}`) })
  })

  after(async function () {
    await context?.close()
    if (profile !== '') await rm(profile, { recursive: true, force: true })
  })

  it('shows the replica that leads and every vendor, and a killed vendor turns suspect without a reload', async function () {
    const secretName = 'quarterly-salaries-2026.xlsx'
    const up = await net.user('alice').upload(await randomFile(join(net.dir, secretName), 700 * 1024), { chunkSize: 256 * 1024, replicas: 2 })
    const fat = net.cluster.fat
    await page.goto(`${fat.http as string}/`)
    await page.waitForSelector('#vendors tbody tr[data-vendor]')
    await page.waitForFunction(() => document.querySelectorAll('#vendors tbody tr[data-state="alive"]').length === 3, undefined, { timeout: 30_000 })
    const vendors = await page.$$eval('#vendors tbody tr[data-vendor]', rows => rows.map(r => r.getAttribute('data-vendor')))
    assert.deepEqual(vendors.sort(), net.cluster.vendors.map(v => v.peerId).sort(), 'every vendor has a row')
    const leader = await page.$eval('#replicas li[data-leader="true"]', li => li.getAttribute('data-replica'))
    assert.equal(leader, fat.peerId, 'the one FAT is shown as the leader')
    await page.waitForFunction(() => document.querySelector('#chunks')?.textContent?.includes('healthy') === true)
    const chunkTiles = await page.$$eval('#chunks div', divs => Object.fromEntries(divs.map(d => [d.querySelector('dt')?.textContent, d.querySelector('dd')?.textContent])))
    assert.equal(chunkTiles.healthy, String(up.chunks), 'the uploaded file\'s chunks are healthy')
    await page.screenshot({ path: join(shots, 'desktop.png'), fullPage: true })

    // the page must not reload itself: a mark left on this window survives only without one
    await page.evaluate(() => { (window as any).storMark = 'same page' })
    const killed = net.cluster.vendors[1]
    await killed.kill('SIGKILL')
    await page.waitForFunction(id => document.querySelector(`#vendors tr[data-vendor="${id}"]`)?.getAttribute('data-state') === 'suspect', killed.peerId, { timeout: 60_000 })
    assert.equal(await page.evaluate(() => (window as any).storMark), 'same page', 'no reload happened')
    await page.waitForFunction(() => [...document.querySelectorAll('#events li')].some(li => li.textContent?.includes('went silent')), undefined, { timeout: 30_000 })
    const badge = await page.$eval(`#vendors tr[data-vendor="${killed.peerId}"] .badge`, b => b.textContent)
    assert.equal(badge, 'suspect')
    // a suspect vendor's copies still count until --repair-after declares it dead, as in `stordaemon status`
    const tiles = await page.$$eval('#chunks div', divs => Object.fromEntries(divs.map(d => [d.querySelector('dt')?.textContent, d.querySelector('dd')?.textContent])))
    assert.equal(tiles.healthy, String(up.chunks), 'a suspect vendor\'s chunks still count as healthy')

    const text = await page.evaluate(() => document.body.innerText)
    const json = await (await fetch(`${fat.http as string}/status.json`)).text()
    for (const shown of [text, json]) {
      assert.ok(!shown.includes(secretName), 'no user file name is shown')
      assert.ok(!shown.includes(up.fileId), 'no file id is shown')
    }
    await page.screenshot({ path: join(shots, 'desktop-killed.png'), fullPage: true })

    // a phone: the page fits the screen's width, with no sideways scrolling
    await page.setViewportSize({ width: 390, height: 844 })
    await page.waitForFunction(() => document.documentElement.scrollWidth <= window.innerWidth)
    await page.screenshot({ path: join(shots, 'phone.png'), fullPage: true })
    assert.deepEqual(problems, [], 'no console error, failed request or error status')
  })
})
