import { Body, Controller, Get, HttpCode, Post } from '@nestjs/common';
import { ApiBadRequestResponse, ApiOkResponse } from '@nestjs/swagger';
import { AdminApi } from '../auth/admin-api.decorator';
import { RequireRole } from '../auth/require-role.decorator';
import { ValidationErrorDto } from '../common/error.dto';
import { ActivePolicyDto, EvaluatePolicyDto, PolicyEvaluationDto } from './dto/policy.dtos';
import { PoliciesService } from './policies.service';

/** `/v1/policies`: the policy in force and dry runs. */
@Controller('v1/policies')
@AdminApi('policies')
export class PoliciesController {
  constructor(private readonly policies: PoliciesService) {}

  /** The policy in force. */
  @Get()
  @ApiOkResponse({ type: ActivePolicyDto })
  active(): ActivePolicyDto {
    return this.policies.active();
  }

  /** Evaluates the policy without issuing, counting or recording anything. */
  @Post('evaluate')
  @HttpCode(200)
  @RequireRole('operator')
  @ApiOkResponse({ type: PolicyEvaluationDto })
  @ApiBadRequestResponse({ type: ValidationErrorDto })
  evaluate(@Body() body: EvaluatePolicyDto): Promise<PolicyEvaluationDto> {
    return this.policies.evaluate(body);
  }
}
