// dropstack's policy pack: `pulumi preview --policy-pack policy` (the pull-request workflow runs
// every preview with it). The policies themselves are in policies.ts.
import { PolicyPack } from "@pulumi/policy";
import { policies } from "./policies";

new PolicyPack("dropstack", { policies });
