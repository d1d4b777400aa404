// The four dependency-token counters between neighbouring modules: load->compute,
// compute->load, compute->store, store->compute. A module that pops waits until the count is
// non-zero (`avail_o`) and decrements it as it starts the instruction; a push increments it when
// the pushing instruction has completed. Each counter has one producer and one consumer, so an
// increment and a decrement may land in the same cycle.
module sinter_tokens #(
  parameter int unsigned W = 16
) (
  input  logic       clk_i,
  input  logic       rst_ni,
  input  logic       clear_i,
  // index 0: load->compute, 1: compute->load, 2: compute->store, 3: store->compute
  input  logic [3:0] inc_i,
  input  logic [3:0] dec_i,
  output logic [3:0] avail_o
);

  for (genvar k = 0; k < 4; k++) begin : g_cnt
    logic [W-1:0] cnt_q;
    assign avail_o[k] = (cnt_q != '0);
    always_ff @(posedge clk_i) begin
      if (!rst_ni || clear_i) begin
        cnt_q <= '0;
      end else begin
        cnt_q <= cnt_q + W'(inc_i[k]) - W'(dec_i[k]);
      end
    end
  end
endmodule
