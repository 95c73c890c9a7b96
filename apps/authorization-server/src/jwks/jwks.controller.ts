import { Controller, Get, Header } from '@nestjs/common';
import { PublicSigningKey, SigningKeyStore } from '@writ/keys';

/** `GET /oauth2/jwks`: the public signing keys, active and retiring. */
@Controller('oauth2')
export class JwksController {
  constructor(private readonly keys: SigningKeyStore) {}

  /** The JWKS (public members only, each with `kid`, `alg`, `use`). */
  @Get('jwks')
  @Header('Content-Type', 'application/jwk-set+json')
  @Header('Cache-Control', 'public, max-age=60')
  jwks(): { keys: PublicSigningKey[] } {
    return this.keys.jwks();
  }
}
