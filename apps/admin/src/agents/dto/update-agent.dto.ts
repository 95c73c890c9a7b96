import { UpdateClientDto } from '../../common/client-identity.dto';

/** `PATCH /v1/agents/{id}`: only the members given change; suspending revokes every live credential of the agent. */
export class UpdateAgentDto extends UpdateClientDto {}
