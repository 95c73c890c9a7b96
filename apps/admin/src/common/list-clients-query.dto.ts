import { ApiPropertyOptional } from '@nestjs/swagger';
import { IsIn, IsOptional } from 'class-validator';
import { CLIENT_STATUSES } from './client-identity';
import { PageQueryDto } from './page-query.dto';

/** `GET /v1/agents` and `GET /v1/orchestrators`: a page, optionally by status. */
export class ListClientsQueryDto extends PageQueryDto {
  @ApiPropertyOptional({ enum: CLIENT_STATUSES })
  @IsOptional()
  @IsIn(CLIENT_STATUSES)
  status?: (typeof CLIENT_STATUSES)[number];
}
