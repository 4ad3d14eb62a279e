// Zigbee2MQTT's device list (`<base>/bridge/devices`) built from the real device definitions
// in npm's zigbee-herdsman-converters, as Zigbee2MQTT builds it: one entry per definition,
// with its model, vendor, description and exposes (an exposes function is called with a
// dummy device, as Zigbee2MQTT does for its documentation). Names and addresses are made up
// from the definition's place in the list.
//
//   node z2m_definitions.mjs NODE_MODULES [--models M1,M2,...] [--from N] [--count N]
//
// Prints the JSON list: the models named (in that order), or `--count` definitions from
// the `--from`th, in the package's order (vendor files by name).
import { createRequire } from "node:module";
import fs from "node:fs";
import path from "node:path";

const [modules, ...args] = process.argv.slice(2);
const option = (name) => {
    const at = args.indexOf(name);
    return at >= 0 ? args[at + 1] : undefined;
};
const require = createRequire(path.resolve(modules) + "/");
const zhc = require("zigbee-herdsman-converters");
const dir = path.join(path.dirname(require.resolve("zigbee-herdsman-converters")), "devices");

const definitions = [];
for (const file of fs.readdirSync(dir).filter((f) => f.endsWith(".js")).sort()) {
    for (const definition of require(path.join(dir, file)).definitions ?? []) {
        definitions.push(definition);
    }
}

let picked;
const models = option("--models");
if (models) {
    picked = models.split(",").map((model) => {
        const found = definitions.find((d) => d.model === model);
        if (!found) throw new Error(`no definition for ${model}`);
        return found;
    });
} else {
    const from = Number(option("--from") ?? 0);
    picked = definitions.slice(from, from + Number(option("--count") ?? definitions.length));
}

const dummy = { isDummyDevice: true, endpoints: [], ieeeAddr: "0x0000000000000000", getEndpoint: () => undefined };
const taken = new Set();
const list = picked.map((raw, n) => {
    const definition = zhc.prepareDefinition(raw);
    const exposes = typeof definition.exposes === "function" ? definition.exposes(dummy, {}) : definition.exposes;
    let name = `${definition.vendor}_${definition.model}`.replace(/[^A-Za-z0-9_-]/g, "_").slice(0, 60);
    while (taken.has(name)) name += "_";
    taken.add(name);
    return {
        ieee_address: `0x00124b00${n.toString(16).padStart(8, "0")}`,
        friendly_name: name,
        type: "EndDevice",
        supported: true,
        disabled: false,
        interview_completed: true,
        interviewing: false,
        network_address: n % 65000,
        definition: {
            model: definition.model,
            vendor: definition.vendor,
            description: definition.description,
            exposes: JSON.parse(JSON.stringify(exposes)),
            options: [],
            supports_ota: Boolean(definition.ota),
        },
    };
});
process.stdout.write(JSON.stringify(list));
