// Instruction fetch: reads PROG_LEN instructions from PROG_BASE in bursts of up to BURST
// instructions into a FIFO that feeds the decoder. A burst is only requested when the FIFO has
// room for all of it, counting instructions already in flight, because responses cannot stall.
// A fetch can wait behind the beats a DMA has in flight on the shared read port; the FIFO is
// deep enough that the modules keep running on what it holds meanwhile.
module sinter_prog_fetch #(
  parameter int unsigned BUS_BYTES  = 32,
  parameter int unsigned FIFO_DEPTH = sinter_isa_pkg::FETCH_DEPTH,
  parameter int unsigned BURST      = sinter_isa_pkg::FETCH_BURST
) (
  input  logic                   clk_i,
  input  logic                   rst_ni,
  input  logic                   abort_i,
  input  logic                   start_i,
  input  logic [31:0]            prog_base_i,
  input  logic [31:0]            prog_len_i,
  // memory read requester
  output logic                   req_valid_o,
  input  logic                   req_ready_i,
  output logic [31:0]            req_addr_o,
  output logic [15:0]            req_len_o,
  input  logic                   resp_valid_i,
  input  logic [BUS_BYTES*8-1:0] resp_data_i,
  // fetched instructions, in program order
  output logic                   insn_valid_o,
  output logic [sinter_isa_pkg::INSN_BITS-1:0] insn_o,
  input  logic                   insn_pop_i
);
  localparam int unsigned IBITS = sinter_isa_pkg::INSN_BITS;
  localparam int unsigned BEATS = sinter_isa_pkg::INSN_BYTES / BUS_BYTES;  // beats per insn
  localparam int unsigned BB    = (BEATS > 1) ? $clog2(BEATS) : 1;
  localparam int unsigned CW    = $clog2(FIFO_DEPTH + 1);

  logic [31:0]     addr_q;      // next instruction address to request
  logic [31:0]     remain_q;    // instructions not yet requested
  logic [CW-1:0]   inflight_q;  // requested, not yet in the FIFO
  logic [CW-1:0]   fifo_count;
  logic [CW-1:0]   burst;
  logic            fifo_empty, fifo_full;
  logic            push;
  logic [IBITS-1:0] word;

  assign burst = (remain_q < 32'(BURST)) ? CW'(remain_q) : CW'(BURST);

  assign req_valid_o = (remain_q != '0) &&
                       ({1'b0, fifo_count} + {1'b0, inflight_q} + {1'b0, burst}
                        <= (CW + 1)'(FIFO_DEPTH));
  assign req_addr_o  = addr_q;
  assign req_len_o   = 16'(burst) * 16'(BEATS);

  // Assemble instructions from beats (a no-op when one beat holds a whole instruction).
  if (BEATS > 1) begin : g_asm
    logic [IBITS-1:0] asm_q;
    logic [BB-1:0]    beat_q;
    always_comb begin
      word = asm_q;
      word[beat_q*BUS_BYTES*8 +: BUS_BYTES*8] = resp_data_i;
    end
    assign push = resp_valid_i && (beat_q == BB'(BEATS - 1));
    always_ff @(posedge clk_i) begin
      if (!rst_ni || abort_i || start_i) begin
        beat_q <= '0;
      end else if (resp_valid_i) begin
        beat_q <= push ? '0 : beat_q + BB'(1);
      end
    end
    always_ff @(posedge clk_i) begin
      if (resp_valid_i) asm_q <= word;
    end
  end else begin : g_direct
    assign word = IBITS'(resp_data_i);
    assign push = resp_valid_i;
  end

  always_ff @(posedge clk_i) begin
    if (!rst_ni || abort_i) begin
      addr_q     <= '0;
      remain_q   <= '0;
      inflight_q <= '0;
    end else if (start_i) begin
      addr_q     <= prog_base_i;
      remain_q   <= prog_len_i;
      inflight_q <= '0;
    end else begin
      if (req_valid_o && req_ready_i) begin
        addr_q   <= addr_q + 32'(burst) * 32'(sinter_isa_pkg::INSN_BYTES);
        remain_q <= remain_q - 32'(burst);
      end
      inflight_q <= inflight_q + ((req_valid_o && req_ready_i) ? burst : '0) - CW'(push);
    end
  end

  sinter_queue #(.WIDTH(IBITS), .DEPTH(FIFO_DEPTH)) u_fifo (
    .clk_i,
    .rst_ni,
    .flush_i (abort_i || start_i),
    .push_i  (push),
    .wdata_i (word),
    .pop_i   (insn_pop_i),
    .rdata_o (insn_o),
    .empty_o (fifo_empty),
    .full_o  (fifo_full),
    .count_o (fifo_count)
  );

  assign insn_valid_o = !fifo_empty;

  logic unused_full;
  assign unused_full = fifo_full;
endmodule
