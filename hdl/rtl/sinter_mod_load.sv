// The load module: runs Load instructions into the activation and weight buffers and Sync
// instructions that target it, in order. Its only neighbour is the compute module ("next").
module sinter_mod_load #(
  parameter int unsigned ROWS      = sinter_isa_pkg::DEFAULT_ROWS,
  parameter int unsigned COLS      = sinter_isa_pkg::DEFAULT_COLS,
  parameter int unsigned ACT_DEPTH = sinter_isa_pkg::DEFAULT_ACT_DEPTH,
  parameter int unsigned WGT_DEPTH = sinter_isa_pkg::DEFAULT_WGT_DEPTH,
  parameter int unsigned BUS_BYTES = sinter_isa_pkg::DEFAULT_BUS_BYTES,
  parameter int unsigned ACT_AW    = $clog2(ACT_DEPTH),
  parameter int unsigned WGT_AW    = $clog2(WGT_DEPTH),
  parameter int unsigned ACT_NCH   = (ROWS > BUS_BYTES) ? ROWS / BUS_BYTES : 1,
  parameter int unsigned WGT_NCH   = (ROWS * COLS > BUS_BYTES) ? ROWS * COLS / BUS_BYTES : 1
) (
  input  logic                   clk_i,
  input  logic                   rst_ni,
  input  logic                   abort_i,
  // instruction queue
  input  logic                   q_valid_i,
  input  logic [sinter_isa_pkg::INSN_BITS-1:0] q_insn_i,
  output logic                   q_pop_o,
  // tokens with the compute module
  input  logic                   tok_next_avail_i,
  output logic                   tok_pop_next_o,
  output logic                   tok_push_next_o,
  output logic                   insn_done_o,
  output logic                   idle_o,
  // memory read requester
  output logic                   req_valid_o,
  input  logic                   req_ready_i,
  output logic [31:0]            req_addr_o,
  output logic [15:0]            req_len_o,
  input  logic                   resp_valid_i,
  input  logic [BUS_BYTES*8-1:0] resp_data_i,
  // buffer write ports
  output logic                   act_we_o,
  output logic [ACT_AW-1:0]      act_waddr_o,
  output logic [ROWS*8-1:0]      act_wdata_o,
  output logic [ACT_NCH-1:0]     act_wchunk_o,
  output logic                   wgt_we_o,
  output logic [WGT_AW-1:0]      wgt_waddr_o,
  output logic [ROWS*COLS*8-1:0] wgt_wdata_o,
  output logic [WGT_NCH-1:0]     wgt_wchunk_o
);
  localparam int unsigned E_ACT   = ROWS;
  localparam int unsigned E_WGT   = ROWS * COLS;
  localparam int unsigned BW      = 8;
  localparam int unsigned LB      = $clog2(BUS_BYTES);
  localparam int unsigned BPE_ACT = (E_ACT > BUS_BYTES) ? E_ACT / BUS_BYTES : 1;
  localparam int unsigned BPE_WGT = (E_WGT > BUS_BYTES) ? E_WGT / BUS_BYTES : 1;

  sinter_isa_pkg::dma_insn_t d;
  assign d = q_insn_i;

  logic       busy_q;
  logic [3:0] deps_q;
  logic [1:0] buf_q;
  logic [7:0] pad_q;
  logic       accept, is_sync, dma_done, dma_busy;

  assign is_sync = (d.opcode == sinter_isa_pkg::OP_SYNC);
  // The next Load may start in the cycle the current one completes (no bubble); a Sync waits a
  // cycle so that at most one instruction completes per cycle.
  assign accept  = q_valid_i && (!busy_q || (dma_done && !is_sync)) &&
                   (!d.deps[sinter_isa_pkg::DEP_POP_NEXT] || tok_next_avail_i);
  assign q_pop_o        = accept;
  assign tok_pop_next_o = accept && d.deps[sinter_isa_pkg::DEP_POP_NEXT];

  // A Sync completes in the cycle it is accepted; a Load when its last row is written.
  always_comb begin
    insn_done_o     = 1'b0;
    tok_push_next_o = 1'b0;
    if (busy_q && dma_done) begin
      insn_done_o     = 1'b1;
      tok_push_next_o = deps_q[sinter_isa_pkg::DEP_PUSH_NEXT];
    end else if (accept && is_sync) begin
      insn_done_o     = 1'b1;
      tok_push_next_o = d.deps[sinter_isa_pkg::DEP_PUSH_NEXT];
    end
  end

  always_ff @(posedge clk_i) begin
    if (!rst_ni || abort_i) begin
      busy_q <= 1'b0;
      deps_q <= '0;
      buf_q  <= '0;
      pad_q  <= '0;
    end else if (accept && !is_sync) begin
      busy_q <= 1'b1;
      deps_q <= d.deps;
      buf_q  <= d.buffer;
      pad_q  <= d.pad_value;
    end else if (busy_q && dma_done) begin
      busy_q <= 1'b0;
    end
  end

  assign idle_o = !busy_q;

  // ---- DMA --------------------------------------------------------------------------------------
  logic                   wr_valid, wr_pad;
  logic [15:0]            wr_row;
  logic [BW-1:0]          wr_beat;
  logic [LB-1:0]          wr_off;
  logic [BUS_BYTES*8-1:0] wr_data;

  sinter_rd_dma #(.BUS_BYTES(BUS_BYTES), .BW(BW)) u_dma (
    .clk_i,
    .rst_ni,
    .abort_i,
    .start_i      (accept && !is_sync),
    .dram_base_i  (d.dram_base),
    .sram_base_i  (d.sram_base),
    .y_size_i     (d.y_size),
    .x_size_i     (d.x_size),
    .y_stride_i   (d.y_stride),
    .x_stride_i   (d.x_stride),
    .pad_top_i    (d.pad_top),
    .pad_bottom_i (d.pad_bottom),
    .pad_left_i   (d.pad_left),
    .pad_right_i  (d.pad_right),
    .beats_i      ((d.buffer == sinter_isa_pkg::BUF_WGT) ? BW'(BPE_WGT) : BW'(BPE_ACT)),
    .busy_o       (dma_busy),
    .done_o       (dma_done),
    .req_valid_o,
    .req_ready_i,
    .req_addr_o,
    .req_len_o,
    .resp_valid_i,
    .resp_data_i,
    .wr_valid_o   (wr_valid),
    .wr_row_o     (wr_row),
    .wr_beat_o    (wr_beat),
    .wr_off_o     (wr_off),
    .wr_data_o    (wr_data),
    .wr_pad_o     (wr_pad)
  );

  sinter_row_writer #(.ELEM_BYTES(E_ACT), .BUS_BYTES(BUS_BYTES), .AW(ACT_AW), .BW(BW)) u_act_wr (
    .valid_i    (wr_valid && busy_q && buf_q == sinter_isa_pkg::BUF_ACT),
    .row_i      (wr_row),
    .beat_i     (wr_beat),
    .off_i      (wr_off),
    .data_i     (wr_data),
    .pad_i      (wr_pad),
    .pad_byte_i (pad_q),
    .we_o       (act_we_o),
    .waddr_o    (act_waddr_o),
    .wdata_o    (act_wdata_o),
    .wchunk_o   (act_wchunk_o)
  );

  sinter_row_writer #(.ELEM_BYTES(E_WGT), .BUS_BYTES(BUS_BYTES), .AW(WGT_AW), .BW(BW)) u_wgt_wr (
    .valid_i    (wr_valid && busy_q && buf_q == sinter_isa_pkg::BUF_WGT),
    .row_i      (wr_row),
    .beat_i     (wr_beat),
    .off_i      (wr_off),
    .data_i     (wr_data),
    .pad_i      (wr_pad),
    .pad_byte_i (pad_q),
    .we_o       (wgt_we_o),
    .waddr_o    (wgt_waddr_o),
    .wdata_o    (wgt_wdata_o),
    .wchunk_o   (wgt_wchunk_o)
  );

  logic unused_load;
  assign unused_load = ^{dma_busy, d};
endmodule
