// OpenMeter's JS SDK against a Meterline URL: node openmeter_sdk.mjs BASE_URL [TOKEN]
// Prints one JSON object with what each call answered; tests/e2e/test_js_sdk.py checks it.
import { OpenMeter, WindowSize } from '@openmeter/sdk'

const [baseUrl, token] = process.argv.slice(2)
const openmeter = new OpenMeter({ baseUrl, token: token || undefined })
const subject = `js-sdk-${process.pid}-${Date.now()}`
const day = { from: new Date('2024-03-01T00:00:00.000Z'), to: new Date('2024-03-02T00:00:00.000Z') }
const out = { subject }

const event = (id, tokens, model) => ({
  specversion: '1.0', id: `${subject}-${id}`, source: 'js-sdk', type: 'prompt', subject,
  time: new Date(`2024-03-01T10:0${id}:00.123Z`), data: { tokens, model, type: 'input' },
})
await openmeter.events.ingest(event(1, 40, 'gpt4'))
await openmeter.events.ingest([event(2, 2, 'gpt4'), event(3, 100, 'gpt3'), event(1, 40, 'gpt4')])

out.meters = (await openmeter.meters.list()).map((meter) => meter.slug)
out.meter = await openmeter.meters.get('tokens_total')
for (let attempt = 0; attempt < 240 && !out.query; attempt++) {
  const result = await openmeter.meters.query('tokens_total', {
    subject: [subject], groupBy: ['model'], windowSize: WindowSize.HOUR, ...day,
  })
  if (result.data.reduce((sum, row) => sum + row.value, 0) === 142) out.query = result
  else await new Promise((resolve) => setTimeout(resolve, 250))
}
out.events = (await openmeter.events.list({ subject, ...day })).map((e) => e.event.id).sort()
try {
  await openmeter.meters.get('no_such_meter')
} catch (error) {
  out.notFound = { statusCode: error.statusCode, type: error.problem?.type }
}
try {
  await openmeter.events.ingest({ ...event(4, 1, 'gpt4'), specversion: '0.3' })
} catch (error) {
  out.invalid = { statusCode: error.statusCode, type: error.problem?.type }
}
const featureKey = `js-feature-${process.pid}`
const feature = await openmeter.features.create({ key: featureKey, name: 'JS tokens', meterSlug: 'tokens_total' })
out.feature = { key: feature.key, meterSlug: feature.meterSlug, byKey: (await openmeter.features.get(featureKey)).id === feature.id }
out.featureKeys = (await openmeter.features.list()).map((f) => f.key)
await openmeter.features.delete(feature.id)
try {
  await openmeter.features.get(featureKey)
} catch (error) {
  out.archived = { statusCode: error.statusCode }
}
const [upserted] = await openmeter.subjects.upsert([{ key: subject, displayName: 'JS customer' }])
out.subjects = {
  upserted: upserted.displayName,
  listed: (await openmeter.subjects.list()).some((s) => s.key === subject),
  byKey: (await openmeter.subjects.get(subject)).id === upserted.id,
}
await openmeter.subjects.delete(subject)
if (token) {
  const portal = await openmeter.portal.createToken({ subject, allowedMeterSlugs: ['tokens_total'] })
  out.portal = { subject: portal.subject, allowedMeterSlugs: portal.allowedMeterSlugs, hasToken: !!portal.token }
}
console.log(JSON.stringify(out))
