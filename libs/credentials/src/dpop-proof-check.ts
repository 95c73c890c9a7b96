import { DPOP_SIGNING_ALGS, DpopProofExpectation, InvalidDpopProofError, VerifiedDpopProof, verifyDpopProof } from '@writ/oauth';
import type { PgJtiStore } from './pg-jti-store';

/**
 * Verifies a DPoP proof and consumes its `jti` (per key, on every instance), so that a proof
 * works once: a replayed proof is `invalid_dpop_proof`.
 */
export async function checkDpopProof(jtis: PgJtiStore, proof: string | string[] | undefined, expectation: DpopProofExpectation): Promise<VerifiedDpopProof> {
  const verified = await verifyDpopProof(proof, expectation);
  if (!(await jtis.consume(`dpop:${verified.jkt}`, verified.jti, verified.expiresAt))) {
    throw new InvalidDpopProofError('the DPoP proof was already used', {
      reason: 'dpop_replay',
      resourceServer: expectation.resourceServer,
      algs: DPOP_SIGNING_ALGS,
    });
  }
  return verified;
}
