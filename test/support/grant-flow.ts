import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { exportJWK, generateKeyPair, SignJWT, type CryptoKey } from 'jose';
import type { Pool } from 'pg';
import type { ActivePolicy } from '@writ/policy';
import type { TestServices } from './test-services';
import { sendJson, TestClient, tokenRequest } from './oauth-client';
import { seedAgent, seedConnector, seedOrchestrator } from './seed';
import { insertIdentityProviderRow, rowIntegrityOf } from '@writ/testing';

/** The declared purpose of the contract's example: pay acct_1 at most 500.00 USD. */
export const PAYOUT_ALLOWED = [
  {
    type: 'connector',
    connector: 'payments',
    actions: ['payouts.create'],
    constraints: { destination: 'acct_1', amount_max: 50000, currency: 'usd' },
  },
  { type: 'connector', connector: 'payments', actions: ['payouts.get'] },
];

/** A payout request inside the declared purpose. */
export const PAYOUT_REQUEST = [
  { type: 'connector', connector: 'payments', actions: ['payouts.create'], constraints: { destination: 'acct_1', amount_max: 42000, currency: 'usd' } },
];

/**
 * An `allowed` or `authorization_details` entry for payouts to `acct_1` in USD up to `amountMax`
 * (minor units), with `extra` members (e.g. a task's `limits`).
 */
export const payoutEntry = (amountMax: number, extra: Record<string, unknown> = {}) => ({
  type: 'connector',
  connector: 'payments',
  actions: ['payouts.create'],
  constraints: { destination: 'acct_1', amount_max: amountMax, currency: 'usd' },
  ...extra,
});

/** A payout request for `acct_1` in USD up to `amountMax` (minor units): what approval rules and limits are tried on. */
export const payoutUpTo = (amountMax: number) => [payoutEntry(amountMax)];

/** The actors of a typical story: an orchestrator, an agent and the payments connector. */
export interface World {
  orchestrator: TestClient;
  agent: TestClient;
  otherAgent: TestClient;
}

/** Seeds two agents and an orchestrator serving both (no connector). */
export async function seedClients(pool: Pool): Promise<World> {
  const agent = await seedAgent(pool, 'agent-1');
  const otherAgent = await seedAgent(pool, 'agent-2');
  const orchestrator = await seedOrchestrator(pool, 'orch-1', ['agent-1', 'agent-2']);
  return { orchestrator, agent, otherAgent };
}

/** Seeds an orchestrator, two agents and the payments connector. */
export async function seedWorld(pool: Pool, baseUrl?: string): Promise<World> {
  const world = await seedClients(pool);
  await seedConnector(pool, 'payments', undefined, baseUrl);
  return world;
}

/** Registers a connector through the admin API, as an operator would; throws unless it is created. */
export async function registerConnector(services: TestServices, definition: Record<string, unknown>): Promise<void> {
  const registered = await sendJson('POST', `${services.adminUrl}/v1/connectors`, definition, services.adminToken);
  if (registered.status !== 201) throw new Error(registered.text);
}

/** client_credentials for the orchestrator; returns the Tasks API token. */
export async function tasksToken(services: TestServices, orchestrator: TestClient): Promise<string> {
  const response = await tokenRequest(services.issuer, orchestrator, { grant_type: 'client_credentials', scope: 'tasks' });
  if (response.status !== 200) throw new Error(`client_credentials failed: ${response.text}`);
  return response.body.access_token;
}

/** Declares a task through the Tasks API; returns its id and task token. */
export async function createTask(
  services: TestServices,
  orchestrator: TestClient,
  overrides: Record<string, unknown> = {},
): Promise<{ task_id: string; task_token: string; expires_at: string }> {
  const token = await tasksToken(services, orchestrator);
  const response = await sendJson(
    'POST',
    `${services.issuer}/v1/tasks`,
    {
      agent_id: 'agent-1',
      purpose: 'pay invoice INV-42 to Acme, at most 500.00 USD',
      allowed: PAYOUT_ALLOWED,
      ttl_seconds: 900,
      ...overrides,
    },
    token,
  );
  if (response.status !== 201) throw new Error(`task creation failed: ${response.text}`);
  return response.body;
}

/** The token-exchange form fields for a task token and details. */
export function exchangeFields(taskToken: string, details: unknown = PAYOUT_REQUEST, extra: Record<string, string> = {}): Record<string, string> {
  return {
    grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange',
    subject_token: taskToken,
    subject_token_type: 'urn:ietf:params:oauth:token-type:jwt',
    authorization_details: typeof details === 'string' ? details : JSON.stringify(details),
    ...extra,
  };
}

/** A user as an identity provider signs them in: ES256 with `kid` `k1`, audience `writ`. */
export interface SignedUser {
  issuer: string;
  subject: string;
  key: CryptoKey;
}

/** A credential for `allowed`, exchanged by `agent` for a fresh task declared to act for `user` (with a signed user token). */
export async function credentialForUser(
  services: TestServices,
  orchestrator: TestClient,
  agent: TestClient,
  user: SignedUser,
  allowed: unknown[],
): Promise<string> {
  const userToken = await new SignJWT({ sub: user.subject })
    .setProtectedHeader({ alg: 'ES256', kid: 'k1' })
    .setIssuer(user.issuer)
    .setAudience('writ')
    .setExpirationTime('5m')
    .sign(user.key);
  const task = await createTask(services, orchestrator, { purpose: 'read the user profile', allowed, ttl_seconds: 600, user_token: userToken });
  const exchanged = await tokenRequest(services.issuer, agent, exchangeFields(task.task_token, allowed));
  if (exchanged.status !== 200) throw new Error(`token exchange failed: ${exchanged.text}`);
  return exchanged.body.access_token as string;
}

/**
 * A trusted identity provider for `issuer` (audience `writ`): its ES256 key (`kid` `k1`) served as
 * a JWKS on loopback and registered in `identity_providers`. Sign users with {@link credentialForUser}.
 */
export async function startIdentityProvider(
  pool: Pool,
  issuer: string,
): Promise<{ key: CryptoKey; publicJwk: Record<string, unknown>; close: () => Promise<void> }> {
  const { privateKey, publicKey } = await generateKeyPair('ES256', { extractable: true });
  const publicJwk = { ...(await exportJWK(publicKey)), kid: 'k1', alg: 'ES256', use: 'sig' };
  const keySet = JSON.stringify({ keys: [publicJwk] });
  const server = createServer((_req, res) => {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(keySet);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const jwksUri = `http://127.0.0.1:${(server.address() as AddressInfo).port}/jwks`;
  await insertIdentityProviderRow(pool, rowIntegrityOf(pool), { issuer, jwksUri });
  return {
    key: privateKey,
    publicJwk,
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/**
 * Policy data (no recompilation), installed on `services`' policy: `payouts.create` requests whose
 * `amount_max` is above `above` (minor units) need a human's approval.
 */
export async function requireApprovalAbove(services: { policy: ActivePolicy }, above: number): Promise<void> {
  const engine = services.policy.current();
  const data = JSON.parse(JSON.stringify(engine.data)) as { writ: { config: Record<string, unknown> } };
  data.writ.config.approval = { payments: { constraint: 'amount_max', above, actions: ['payouts.create'] } };
  services.policy.install(await engine.withData(data), 'test');
}
