// Seed 004's getting-started guide, verbatim, with OpenMeter's JS SDK against a Meterline URL, then
// what the guide implies: usage burns the monthly allowance, a grant adds to it, history and a reset.
// node seed_004.mjs BASE_URL. Prints one JSON object; tests/e2e/test_js_sdk.py checks it.
import { OpenMeter } from '@openmeter/sdk'

const [baseUrl] = process.argv.slice(2)
const out = {}

// --- the guide, as written (its baseUrl is the local OpenMeter's; ours is given) ---------------------
// Connect to locally running OpenMeter instance
const openmeter = new OpenMeter({
  baseUrl,
})

// Create feature GPT-4 Tokens
const feature = await openmeter.features.create({
  key: 'gpt_4_tokens',
  name: 'GTP-4 Tokens',
  meterSlug: 'tokens_total',
  meterGroupByFilters: {
    model: 'gpt-4',
  },
})

// Give 1 million monthly GTP-4 tokens to customer-1
const entitlement = await openmeter.subjects.createEntitlement('customer-1', {
  type: 'metered',
  featureKey: 'gpt_4_tokens',
  issueAfterReset: 1_000_000, // Issue 1 million tokens after each reset (starting now)
  usagePeriod: {
    interval: 'MONTH',
  },
  isSoftLimit: false // If balance falls to 0, access is denied
})

// Get the entitlement's current value
const value = await openmeter.subjects.getEntitlementValue(
  'customer-1',
  'gpt_4_tokens',
);
const { hasAccess, balance, usage, overage } = value;
// --- end of the guide ----------------------------------------------------------------------------------

out.feature = { key: feature.key, meterSlug: feature.meterSlug, meterGroupByFilters: feature.meterGroupByFilters }
out.entitlement = {
  type: entitlement.type, subjectKey: entitlement.subjectKey, featureId: entitlement.featureId === feature.id,
  usagePeriod: entitlement.usagePeriod.interval, issueAfterReset: entitlement.issueAfterReset,
  periodDays: (new Date(entitlement.currentUsagePeriod.to) - new Date(entitlement.currentUsagePeriod.from)) / 864e5,
}
out.initial = { hasAccess, balance, usage, overage }

const tokens = (id, subject, amount, model) => ({
  specversion: '1.0', id: `seed-004-${id}`, source: 'seed-004', type: 'prompt', subject, time: new Date(),
  data: { tokens: amount, model, type: 'output' },
})
const valueOnce = async (subject, wanted) => {
  for (let attempt = 0; attempt < 240; attempt++) {
    const now = await openmeter.subjects.getEntitlementValue(subject, 'gpt_4_tokens')
    if (now.usage === wanted) return now
    await new Promise((resolve) => setTimeout(resolve, 250))
  }
  throw new Error(`usage of ${subject} never reached ${wanted}`)
}

// Usage: 600,000 GPT-4 tokens (and GPT-3 tokens and another customer's, which do not count)
await openmeter.events.ingest([
  tokens(1, 'customer-1', 600_000, 'gpt-4'), tokens(2, 'customer-1', 999, 'gpt-3'), tokens(3, 'customer-9', 77, 'gpt-4'),
])
out.afterUsage = await valueOnce('customer-1', 600_000)
// 500,000 more: past the allowance, access is denied (the guide answers 402 then)
await openmeter.events.ingest(tokens(4, 'customer-1', 500_000, 'gpt-4'))
out.exhausted = await valueOnce('customer-1', 1_100_000)

// Grant additional usage: 250,000 tokens for a month; it pays back the 100,000 overage first
const grant = await openmeter.subjects.createEntitlementGrant('customer-1', 'gpt_4_tokens', {
  amount: 250_000, effectiveAt: new Date(), expiration: { duration: 'MONTH', count: 1 },
})
out.grant = { amount: grant.amount, priority: grant.priority, entitlementId: grant.entitlementId === entitlement.id }
out.afterGrant = await openmeter.subjects.getEntitlementValue('customer-1', entitlement.id)
out.grants = (await openmeter.subjects.listEntitlementGrants('customer-1', 'gpt_4_tokens'))
  .map((g) => g.amount).sort((a, b) => a - b)
out.allGrants = (await openmeter.grants.list({ subject: ['customer-1'] })).length
out.listed = (await openmeter.subjects.listEntitlements('customer-1')).map((e) => e.featureKey)
const history = await openmeter.subjects.getEntitlementHistory('customer-1', entitlement.id, { windowSize: 'DAY' })
out.history = history.windowedHistory.reduce((sum, w) => sum + w.usage, 0)

// A reset (on customer-2, whose daily periods started two minutes ago): the allowance is issued again
const earlier = new Date(Math.floor(Date.now() / 60000) * 60000 - 120000)
await openmeter.subjects.createEntitlement('customer-2', {
  type: 'metered', featureKey: 'gpt_4_tokens', issueAfterReset: 1_000, usagePeriod: { interval: 'DAY', anchor: earlier },
  measureUsageFrom: earlier,
})
await openmeter.events.ingest({ ...tokens(5, 'customer-2', 1_500, 'gpt-4'), time: new Date(earlier.getTime() + 30000) })
out.beforeReset = await valueOnce('customer-2', 1_500)
const [customer2] = await openmeter.subjects.listEntitlements('customer-2')
await openmeter.subjects.resetEntitlementUsage('customer-2', customer2.id, {})
out.afterReset = await openmeter.subjects.getEntitlementValue('customer-2', 'gpt_4_tokens')

// Errors are problem+json the SDK understands
try {
  await openmeter.subjects.createEntitlement('customer-1', { type: 'metered', featureKey: 'gpt_4_tokens', usagePeriod: { interval: 'MONTH' } })
} catch (error) {
  out.conflict = { statusCode: error.statusCode, conflictingEntityId: error.problem?.extensions?.conflictingEntityId === entitlement.id }
}
console.log(JSON.stringify(out))
