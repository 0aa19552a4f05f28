// Decides AWS requests against identity policies with @cloud-copilot/iam-simulate.
// Used by src/imagejobs_tools/local/iam_audit.py (IamEvaluator); installed by `make iam-evaluator`.
//
// stdin:  {"principals": {NAME: {"arn", "accountId", "policies": [{"name", "document"}], "context"}},
//          "requests": [{"principal": NAME, "action", "resource"}]}
// stdout: {"results": [{"decision": "Allowed" | "ImplicitlyDenied" | "ExplicitlyDenied" | "Invalid",
//                       "error"?: string,
//                       "allowedBy": [{"policy", "statement" (0-based index), "actions": [matching patterns]}]}]}
// One result per request, in order. "Invalid": iam-simulate refused the request (an unknown action,
// a resource of a type the action does not take, a malformed policy); `error` says why.
import { runSimulation } from '@cloud-copilot/iam-simulate'

async function readStdin() {
  const chunks = []
  for await (const chunk of process.stdin) chunks.push(chunk)
  return JSON.parse(Buffer.concat(chunks).toString('utf8'))
}

function allowedBy(result) {
  const statements = result?.analysis?.identityAnalysis?.allowStatements ?? []
  return statements.map((s) => ({
    policy: s.policyId,
    statement: s.statement.index() - 1,
    // One explain for a single-string Action, a list for an array of them.
    actions: [s.explain?.actions ?? []].flat().filter((a) => a.matches).map((a) => a.action),
  }))
}

async function decide(principal, request) {
  const response = await runSimulation(
    {
      identityPolicies: principal.policies.map((p) => ({ name: p.name, policy: p.document })),
      serviceControlPolicies: [],
      resourceControlPolicies: [],
      request: {
        principal: principal.arn,
        action: request.action,
        resource: { resource: request.resource, accountId: principal.accountId },
        contextVariables: principal.context ?? {},
      },
    },
    {},
  )
  if (response.resultType === 'error') {
    return { decision: 'Invalid', error: JSON.stringify(response.errors), allowedBy: [] }
  }
  const results = response.resultType === 'single' ? [response.result] : response.results
  return { decision: response.overallResult, allowedBy: results.flatMap(allowedBy) }
}

const input = await readStdin()
const results = []
for (const request of input.requests) {
  const principal = input.principals[request.principal]
  if (principal === undefined) {
    results.push({ decision: 'Invalid', error: `unknown principal ${request.principal}`, allowedBy: [] })
  } else {
    results.push(await decide(principal, request))
  }
}
process.stdout.write(JSON.stringify({ results }) + '\n')
