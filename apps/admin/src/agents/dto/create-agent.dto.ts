import { CreateClientDto } from '../../common/client-identity.dto';

/** `POST /v1/agents`. */
export class CreateAgentDto extends CreateClientDto {}
