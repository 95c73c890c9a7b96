import { randomBytes } from 'node:crypto';
import { MasterKey } from '@writ/keys';
import { checkpointKeyring, checkpointSignatureValid, parseCheckpointLines, signCheckpoint, SignedCheckpoint } from './audit-checkpoint';
import { isPruneMarker, pruneMarkerDigest, pruneMarkerSignatureValid, signPruneMarker } from './audit-prune';

describe('prune markers', () => {
  const signer = new MasterKey(randomBytes(32)).checkpointSigningKey();
  const ring = checkpointKeyring([signer.publicJwk]);
  const marker = signPruneMarker(
    {
      up_to_seq: 1000,
      up_to_hash: 'a'.repeat(64),
      checkpoint: 'b'.repeat(64),
      exported_sha256: 'c'.repeat(64),
      events: 1000,
      prev: null,
      time: '2026-11-01T00:00:00.000Z',
      actor: 'cli',
    },
    signer,
  );

  it('verifies under the checkpoint key, and not once any member changes', () => {
    expect(pruneMarkerSignatureValid(marker, ring)).toBe(true);
    for (const change of [
      { up_to_seq: 999 },
      { up_to_hash: 'd'.repeat(64) },
      { exported_sha256: 'e'.repeat(64) },
      { actor: 'dba' },
      { prev: 'f'.repeat(64) },
    ]) {
      expect(pruneMarkerSignatureValid({ ...marker, ...change }, ring)).toBe(false);
    }
    const other = new MasterKey(randomBytes(32)).checkpointSigningKey();
    expect(pruneMarkerSignatureValid(marker, checkpointKeyring([other.publicJwk]))).toBe(false);
  });

  it('is never taken for a checkpoint, nor a checkpoint for a marker (domain separation)', () => {
    const checkpoint = signCheckpoint({ seq: 1000, hash: 'a'.repeat(64), prev: null, time: marker.time }, signer);
    expect(pruneMarkerSignatureValid({ ...marker, sig: checkpoint.sig }, ring)).toBe(false);
    const asCheckpoint = { v: 1, seq: 1000, hash: marker.up_to_hash, prev: null, time: marker.time, kid: marker.kid, sig: marker.sig } as SignedCheckpoint;
    expect(checkpointSignatureValid(asCheckpoint, ring)).toBe(false);
  });

  it('shares the checkpoint file: checkpoint parsing skips marker lines', () => {
    const checkpoint = signCheckpoint({ seq: 1000, hash: 'a'.repeat(64), prev: null, time: marker.time }, signer);
    const text = [JSON.stringify(checkpoint), JSON.stringify(marker), ''].join('\n');
    expect(parseCheckpointLines(text)).toEqual([checkpoint]);
    expect(isPruneMarker(JSON.parse(JSON.stringify(marker)))).toBe(true);
    expect(isPruneMarker(checkpoint)).toBe(false);
    expect(pruneMarkerDigest(marker)).toMatch(/^[0-9a-f]{64}$/);
  });
});
