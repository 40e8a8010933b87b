// Test harness: nostr-tools' Negentropy (protocol V1) as the initiator, over stdin/stdout.
//
// Usage: node negentropy_client.mjs ITEMS_FILE [FRAME_SIZE_LIMIT]
//   ITEMS_FILE: one item per line, "<timestamp> <64 hex digits id>".
// Writes "MSG <hex>" lines (its messages), reads one hex reply per line from stdin, and ends
// with one line "DONE <json>", the JSON being {"have": [hex ids], "need": [hex ids]}.
// nostr-tools keeps timestamps in JS numbers and its varints in 32-bit signed integers, and a
// bound's timestamp travels as timestamp + 1: keep timestamps below 2**31 - 1.
import { readFileSync } from "node:fs";
import { createInterface } from "node:readline";

const nip77 = await import(
  new URL("./node_modules/nostr-tools/lib/esm/nip77.js", import.meta.url).href
);

const [itemsFile, frameSizeArg] = process.argv.slice(2);
const storage = new nip77.NegentropyStorageVector();
for (const line of readFileSync(itemsFile, "utf8").split("\n")) {
  if (line.trim() === "") continue;
  const [timestamp, id] = line.trim().split(" ");
  storage.insert(Number(timestamp), id);
}
storage.seal();

const negentropy = new nip77.Negentropy(storage, frameSizeArg ? Number(frameSizeArg) : undefined);
const have = [];
const need = [];
process.stdout.write(`MSG ${negentropy.initiate()}\n`);

let finished = false;
const input = createInterface({ input: process.stdin, crlfDelay: Infinity });
for await (const line of input) {
  const next = negentropy.reconcile(
    line.trim(),
    (id) => have.push(id),
    (id) => need.push(id),
  );
  if (next === null) {
    // Exit only once the (possibly large) line is flushed: process.exit() may cut a pipe write.
    finished = true;
    process.stdout.write(`DONE ${JSON.stringify({ have, need })}\n`, () => process.exit(0));
    break;
  }
  process.stdout.write(`MSG ${next}\n`);
}
if (!finished) {
  process.stderr.write("stdin closed before the session ended\n");
  process.exit(1);
}
