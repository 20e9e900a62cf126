// Pull sessions and image insights: what pulls cost. On by default: the
// bounds below cap its memory whatever the traffic.
import { Type, type StaticDecode } from '@sinclair/typebox'
import { Bool, Duration, Int, Pattern } from './fields.js'

export const Insights = Type.Object({
  enabled: Bool(true),
  // A pull is over once its client has been quiet this long with no blob of it still sending
  // (or at once when every blob of its manifest has been sent).
  sessionIdle: Duration({ default: '10s', minMs: 100, maxMs: 600_000 }),
  // Pulls kept for /api/v1/pulls (a ring: the oldest go first).
  recentPulls: Int(10, 100_000, { default: 1000 }),
  // Images with aggregates; past this, the least recently pulled is forgotten.
  maxImages: Int(10, 100_000, { default: 2000 }),
  // Clients (address + user agent) with pulls in progress; past this, the oldest session ends early.
  maxClients: Int(10, 1_000_000, { default: 10_000 }),
  // How often the history is written to the store (and at shutdown).
  persistInterval: Duration({ default: '1m', minMs: 1000, maxMs: 3_600_000 }),
  // The history's name in the store; default: "local" on a filesystem, the host name on S3 (one per replica).
  instance: Type.Optional(Pattern(/^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/, 'must be a name of letters, digits, ".", "_" or "-"')),
}, { additionalProperties: false, default: {} })

export type InsightsConfig = Readonly<StaticDecode<typeof Insights>>
