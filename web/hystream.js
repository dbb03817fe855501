// Shows the text a HyStream node returns in its `ui.text` (e.g. how much of a LoRA was applied) in a
// read-only box on the node. The box is not saved with the workflow: it is a report of the last run.
import { app } from "../../scripts/app.js";
import { ComfyWidgets } from "../../scripts/widgets.js";

const BOX = "hystream_report";

app.registerExtension({
    name: "HyStream.NodeReports",
    async beforeRegisterNodeDef(nodeType, nodeData) {
        if (!nodeData?.name?.startsWith("HyStream")) return;
        const onExecuted = nodeType.prototype.onExecuted;
        nodeType.prototype.onExecuted = function (message) {
            onExecuted?.apply(this, arguments);
            const text = message?.text;
            if (!Array.isArray(text) || text.length === 0) return;
            let box = this.widgets?.find((w) => w.name === BOX);
            if (!box) {
                box = ComfyWidgets["STRING"](this, BOX, ["STRING", { multiline: true }], app).widget;
                box.serialize = false;
                if (box.inputEl) {
                    box.inputEl.readOnly = true;
                    box.inputEl.style.opacity = 0.8;
                }
            }
            box.value = text.join("\n");
            this.setDirtyCanvas?.(true, true);
        };
    },
});
